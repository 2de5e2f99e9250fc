"""On a new incident, a snapshot from each camera of the unit's place; never in the way.

The watcher hears a fresh ALARM (or duress CHECKIN) only after the pipeline has committed
it, and so after its publication is queued in the outbox: nothing here can delay an
alarm. :meth:`SnapshotWatch.on_frame` only puts the incident on a queue; :meth:`run` (a
task of the gateway's TaskGroup) fetches from all its cameras at once, each within
``fetch.TIMEOUT_S``, keeps what came (gateway/video/snapshots.py) and lets
:meth:`tick` queue the parts behind the alarms.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import aiohttp

from gateway.core.clock import Clock
from gateway.core.config import Camera, Config, Unit
from gateway.core.credentials import SecretDir
from gateway.core.errors import CameraCredentialError
from gateway.video.cameras import Login, read_login
from gateway.video.fetch import MAX_BYTES, TIMEOUT_S, Shot, fetch, session
from gateway.video.snapshots import Snapshots
from protocol import Alarm, Checkin, Frame

log = logging.getLogger(__name__)

QUEUE_MAX = 64  # incidents waiting for their snapshots; past this the oldest are skipped


class SnapshotWatch:
    """Watcher (gateway/pipeline/ports.py) and service task: snapshots of every new incident."""

    def __init__(
        self,
        config: Config,
        snapshots: Snapshots,
        secrets: SecretDir,
        clock: Clock,
        *,
        timeout_s: float = TIMEOUT_S,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        """Logins are read once here; a missing one is logged and its camera asked without."""
        self._config = config
        self._snapshots = snapshots
        self._clock = clock
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._logins: dict[str, Login | None] = {}
        for camera in config.cameras.values():
            try:
                self._logins[camera.id] = read_login(secrets, camera)
            except CameraCredentialError as exc:
                log.error("%s: its snapshots will fail (HTTP 401)", exc)
                self._logins[camera.id] = None
        self._todo: deque[tuple[str, Unit]] = deque()
        self._wake = asyncio.Event()
        self._seen: deque[str] = deque(maxlen=256)
        self.fetch_s: deque[float] = deque(maxlen=4096)  # each camera's fetch, recent
        self.outcomes: dict[str, int] = {}
        self.skipped = 0
        self.failed = 0

    # -- Watcher ------------------------------------------------------------------------

    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        """A fresh frame: if it opened an incident at a place with cameras, queue it."""
        body = frame.body
        if not unit.cameras or not (
            isinstance(body, Alarm) or (isinstance(body, Checkin) and body.duress)
        ):
            return
        incident = self._snapshots.incident_of(frame.unit, frame.epoch, frame.seq)
        # an incident's id is that of its first frame: any other frame only folded in
        if incident is None or not incident.endswith(f"-{frame.epoch}-{frame.seq}"):
            return
        if incident in self._seen or self._snapshots.known(incident):
            return
        self._seen.append(incident)
        self.take(incident, unit)

    def take(self, incident: str, unit: Unit) -> None:
        """Fetch the snapshots of ``incident`` at ``unit``'s place (as soon as :meth:`run` can)."""
        if len(self._todo) >= QUEUE_MAX:
            dropped, _ = self._todo.popleft()
            self.skipped += 1
            log.warning("snapshots of %s skipped: %d incidents waiting", dropped, QUEUE_MAX)
        self._todo.append((incident, unit))
        self._wake.set()

    def on_link(self, link: str, up: bool, at: float) -> None:
        """Links do not matter here."""

    def on_command(self, topic: str, payload: bytes, at: float) -> None:
        """No commands."""

    def tick(self, now: float) -> None:
        """Queue further snapshot parts as the outbox has room for them."""
        self._snapshots.pump(now)

    # -- service ------------------------------------------------------------------------

    async def run(self) -> None:
        """Fetch the snapshots of queued incidents, each incident in its own task."""
        async with session(self._timeout_s) as client, asyncio.TaskGroup() as tg:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._todo:
                    incident, unit = self._todo.popleft()
                    tg.create_task(self._guarded(client, incident, unit), name=f"snap-{incident}")

    async def _guarded(self, client: aiohttp.ClientSession, incident: str, unit: Unit) -> None:
        # a failure here (a journal error, a bug) is logged and ends only this task:
        # pictures must never take the gateway down with them
        try:
            await self._incident(client, incident, unit)
        except Exception:
            self.failed += 1
            log.exception("incident %s: snapshots failed", incident)

    async def _incident(self, client: aiohttp.ClientSession, incident: str, unit: Unit) -> None:
        cameras = [self._config.cameras[c] for c in unit.cameras]
        cameras = [c for c in cameras if c.snapshot is not None]
        shots = await asyncio.gather(*(self._one(client, c) for c in cameras))
        at = self._clock.now()
        kept: list[tuple[Shot, str | None]] = []
        for shot in shots:
            self.fetch_s.append(shot.elapsed_s)
            self.outcomes[shot.status] = self.outcomes.get(shot.status, 0) + 1
            if shot.status != "ok":
                log.warning(
                    "incident %s: camera %s: %s %s", incident, shot.camera, shot.status, shot.error
                )
            try:
                rel = await asyncio.to_thread(self._snapshots.save_file, incident, shot)
            except OSError as exc:
                log.error(
                    "incident %s: cannot keep the snapshot of %s: %s", incident, shot.camera, exc
                )
                shot = Shot(shot.camera, "not_kept", shot.elapsed_s, error=str(exc)[:160])
                rel = None
            kept.append((shot, rel))
        self._snapshots.record_all(incident, unit.site, kept, at)
        self._snapshots.pump(at)

    async def _one(self, client: aiohttp.ClientSession, camera: Camera) -> Shot:
        t0 = time.monotonic()
        try:
            return await fetch(
                client,
                camera,
                self._logins.get(camera.id),
                timeout_s=self._timeout_s,
                max_bytes=self._max_bytes,
            )
        except Exception as exc:  # a bug of ours or aiohttp's must not end the service
            log.exception("camera %s: snapshot failed", camera.id)
            return Shot(camera.id, "error", time.monotonic() - t0, error=type(exc).__name__)
