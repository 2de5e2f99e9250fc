"""The police duty room's view of live alarms, and the ack (``campusguard console``).

The board (:mod:`gateway.dutyroom.board`) on a terminal, redrawn on every message and every
second: incidents waiting for the police first, missed check-ins with their rung, units
in trouble, recent events; a bell on a new alarm. On every (re)connect the board is
rebuilt from the gateway's retained topics. Type an incident's number or id and Enter to
acknowledge it (``3 false`` or ``3 test`` sets the disposition; default genuine), or a
missed check-in's ``P1`` (or post id). ``--json`` prints one JSON line per received
message instead (for scripts and tests); ``--ack-after MS`` acknowledges every new
incident after MS milliseconds.

Trust: only what a gateway signed is shown (its public key ``gateway-<id>.pub`` in
``--keydir``); anything else is dropped and counted (``dropped`` in the header, a
``dropped`` line with ``--json``), as is a payload over
:data:`gateway.security.envelope.MAX_PAYLOAD_BYTES` (before it is parsed). Acks are signed with
the duty room's key (``dutyroom-<name>.pem``). A gateway whose signed status is older
than three status periods shows as ``stale``: a dead gateway cannot hide behind a
replayed ``online``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiomqtt

from gateway.core.broker import (
    CLUSTER_KEEPALIVE_S,
    CLUSTER_TIMEOUT_S,
    BrokerSettings,
)
from gateway.core.cancelling import raise_if_cancelling
from gateway.core.errors import EnvelopeError, GatewayError, UsageError
from gateway.dutyroom.board import DISPOSITION_WORDS, Board, paint
from gateway.relay.acks import make_ack
from gateway.relay.mqttsocket import guard_write_watch, retrieve_disconnect, subscribe
from gateway.security.envelope import Signer, open_gateway
from gateway.security.signkeys import dutyroom_kid, gateway_keys, read_private

log = logging.getLogger(__name__)

DISPOSITIONS = DISPOSITION_WORDS
REDRAW_S = 1.0
BOARD_TOPICS = ("alarm/+", "open/+", "event/+", "duty/+", "unit/+/state", "post/+/state")


@dataclass(frozen=True, slots=True)
class ConsoleOptions:
    """What the console is told (``campusguard console``'s options, gateway/cli/console.py)."""

    brokers: list[BrokerSettings]  # one broker, or a cluster's nodes in order
    keydir: str  # dutyroom-<name>.pem (signs acks) and gateway-<id>.pub (trusted)
    dutyroom: str | None = None  # whose key signs; None: the only one in keydir
    prefix: str = "campusguard"
    site: str = "+"
    by: str = "duty-room"  # who acknowledges
    ack_after: int | None = None  # ms after which every new incident is acknowledged
    tz: str | None = None  # an IANA zone; None: the system's
    once: int | None = None  # exit after this many messages
    json: bool = False  # one JSON line per message instead of the board


class Console:
    """One broker connection: receive, show, acknowledge."""

    def __init__(self, opts: ConsoleOptions) -> None:
        """GatewayError (one line naming the option) if the keys or the zone will not do."""
        self.opts = opts
        self.tz = zone_of(opts.tz)
        self.brokers = opts.brokers
        self.settings = self.brokers[0]
        self.trusted = gateway_keys(opts.keydir)
        if not self.trusted:
            raise GatewayError(
                f"--keydir {opts.keydir}: no gateway public key (gateway-<id>.pub): nothing"
                " could be shown"
            )
        self.signer = dutyroom_signer(opts.keydir, opts.dutyroom)
        self.board = Board()
        self._note = ""
        self._size: os.terminal_size | None = None
        self.count = 0
        self.done = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._acked: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopped_by: signal.Signals | None = None

    async def run(self) -> None:
        """Connect (retrying) until ``--once`` messages or SIGINT/SIGTERM (``stopped_by``)."""
        loop = asyncio.get_running_loop()
        connect = asyncio.create_task(self._connect_loop())
        # our own handlers, not Python's KeyboardInterrupt: a console started with SIGINT
        # ignored (a background job of a script, nohup) would otherwise never stop on
        # Ctrl-C, and SIGTERM would kill it without closing the broker session
        stops = (signal.SIGINT, signal.SIGTERM)
        for sig in stops:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop, sig, connect)
        interactive = not self.opts.json and sys.stdin is not None and not sys.stdin.closed
        if interactive:
            with contextlib.suppress(ValueError, OSError, NotImplementedError):
                loop.add_reader(sys.stdin.fileno(), self._on_stdin)
        redraw = asyncio.create_task(self._redraw_every_second()) if not self.opts.json else None
        try:
            await connect
        except asyncio.CancelledError:
            if self.stopped_by is None:
                raise  # cancelled from outside, not by our signal handler
        finally:
            for sig in stops:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            if redraw is not None:
                redraw.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await redraw

    def _stop(self, sig: signal.Signals, connect: asyncio.Task[None]) -> None:
        """SIGINT/SIGTERM: leave the broker cleanly, wherever the loop is (even a retry)."""
        self.stopped_by = sig
        self.done.set()
        connect.cancel()

    async def _redraw_every_second(self) -> None:
        """The clock and the ages move even when no message comes."""
        while True:
            await asyncio.sleep(REDRAW_S - time.time() % REDRAW_S)
            self._redraw()

    async def _connect_loop(self) -> None:
        node = 0
        while not self.done.is_set():
            s = self.settings = self.brokers[node]  # the nodes of one cluster, in turn
            client = guard_write_watch(
                aiomqtt.Client(
                    s.host,
                    s.port,
                    username=s.username,
                    password=s.password,
                    tls_context=s.tls_context(),
                    # a desk's own persistent session (the broker account's name, as
                    # Mosquitto binds it): on another node of the cluster its
                    # subscriptions and what was queued for it are there already
                    identifier=s.username,
                    clean_session=s.username is None,
                    # with several nodes a frozen one is left after ~2 keepalives
                    keepalive=min(s.keepalive_s, CLUSTER_KEEPALIVE_S)
                    if len(self.brokers) > 1
                    else s.keepalive_s,
                    timeout=CLUSTER_TIMEOUT_S if len(self.brokers) > 1 else 10.0,
                )
            )
            try:
                async with client:
                    self._client = client
                    # the retained topics rebuild the board at once
                    self.board.reconnected()
                    base = f"{self.opts.prefix}/{self.opts.site}"
                    for leaf in BOARD_TOPICS:
                        await subscribe(client, f"{base}/{leaf}")
                    # gateway status is per gateway, not per site (retained: arrives at once)
                    await subscribe(client, f"{self.opts.prefix}/gateway/+/status")
                    self._redraw()
                    reader = asyncio.create_task(self._read(client))
                    stopper = asyncio.create_task(self.done.wait())
                    try:
                        await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        # also on Ctrl-C (this task cancelled): the reader must not outlive
                        # the connection and die unobserved of its disconnect
                        for t in (reader, stopper):
                            t.cancel()
                        await asyncio.gather(reader, stopper, return_exceptions=True)
                    if reader.done() and not reader.cancelled() and reader.exception():
                        raise reader.exception()  # type: ignore[misc]
            except aiomqtt.MqttError as exc:
                self._client = None
                raise_if_cancelling(exc)
                log.warning("broker %s:%d: %s; retrying", s.host, s.port, exc)
                node = (node + 1) % len(self.brokers)
                await asyncio.sleep(1.0)
            finally:
                # a disconnect while no one read the messages (a keepalive that expired
                # during a subscribe): else asyncio logs its exception when freed
                retrieve_disconnect(client)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            raw = m.payload if isinstance(m.payload, bytes) else str(m.payload or "").encode()
            topic = str(m.topic)
            try:
                # an empty payload clears a retained topic: nothing to verify (None)
                data: Any = open_gateway(topic, raw, self.trusted) if raw else None
            except EnvelopeError as exc:
                self.board.dropped += 1
                log.info("dropped a message on %s: %s", topic, exc)
                if self.opts.json:
                    self._emit(
                        {
                            "topic": topic,
                            "kind": "dropped",
                            "payload": {"reason": exc.reason},
                            "at": _now(),
                        }
                    )
                continue
            taken = self.board.take(topic, data, time.time())
            kind = taken.kind
            if self.opts.json:
                self._emit({"topic": topic, "kind": kind, "payload": data, "at": _now()})
            else:
                self._redraw(bell=taken.alert)
            if (
                kind == "alarm"
                and self.opts.ack_after is not None
                and isinstance(data, dict)
                and data.get("update") == "new"
            ):
                task = asyncio.create_task(self._ack_later(data, self.opts.ack_after))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self.count += 1
            if self.opts.once is not None and self.count >= self.opts.once:
                self.done.set()

    async def _ack_later(self, data: dict[str, Any], after_ms: int) -> None:
        await asyncio.sleep(after_ms / 1000.0)
        await self.ack(str(data["incident"]), str(data.get("site")), "genuine")

    async def ack(self, incident: str, site: str, disposition: str, *, again: bool = False) -> None:
        """Publish the acknowledgement of ``incident`` (once, unless ``again``)."""
        client = self._client
        if client is None:
            self._redraw(f"not connected: {incident} not acknowledged")
            return
        if incident in self._acked and not again:
            return
        if self.signer is None:
            self._redraw(self._no_key)
            return
        topic, payload = make_ack(
            self.signer,
            self.opts.prefix,
            site,
            incident=incident,
            by=self.opts.by,
            disposition=disposition,
        )
        await client.publish(topic, payload, qos=1)
        self._acked.add(incident)
        self.board.acked(incident)
        if self.opts.json:
            body = json.loads(json.loads(payload)["body"])
            self._emit({"topic": topic, "kind": "ack_sent", "payload": body, "at": _now()})
        else:
            self._redraw(f"acknowledged {incident}")

    def _on_stdin(self) -> None:
        line = sys.stdin.readline()
        if not line:
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
            return
        self._redraw(full=True)  # the Enter moved the cursor off the prompt line
        words = line.split()
        if not words:
            return
        target = self.board.resolve(words[0])
        disposition = DISPOSITIONS.get(words[1] if len(words) > 1 else "genuine")
        if target is None or disposition is None:
            self._redraw(f"nothing on the board is {words[0]!r} (or unknown disposition)")
            return
        if target.kind == "post":
            task = asyncio.create_task(self.ack_post(target.id, target.site))
        else:
            task = asyncio.create_task(self.ack(target.id, target.site, disposition, again=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ack_post(self, post: str, site: str) -> None:
        """Answer a missed check-in at ``post`` (the duty watch stops its ladder)."""
        client = self._client
        if client is None:
            self._redraw(f"not connected: {post} not acknowledged")
            return
        if self.signer is None:
            self._redraw(self._no_key)
            return
        topic, payload = make_ack(self.signer, self.opts.prefix, site, post=post, by=self.opts.by)
        await client.publish(topic, payload, qos=1)
        self._redraw(f"acknowledged the missed check-in at {post}")

    def _redraw(self, note: str = "", *, bell: bool = False, full: bool = False) -> None:
        """Draw the board above the prompt; ``full`` also clears and redraws the prompt."""
        if self.opts.json:
            return
        if note:
            self._note = note
        size = shutil.get_terminal_size((100, 40))
        full = full or size != self._size  # the first paint, or the terminal was resized
        self._size = size
        text = self.board.render(
            time.time(), tz=self.tz, width=size.columns, height=size.lines - 1, note=self._note
        )
        sys.stdout.write(paint(text, size.lines, full=full, bell=bell))
        sys.stdout.flush()

    @property
    def _no_key(self) -> str:
        return (
            f"cannot acknowledge: no duty-room key in {self.opts.keydir}"
            " (campusguard keygen --dutyroom NAME)"
        )

    def _emit(self, obj: dict[str, Any]) -> None:
        print(json.dumps(obj, separators=(",", ":")), flush=True)


def zone_of(name: str | None) -> tzinfo | None:
    """``--tz``: an IANA zone (None: the system's local time); GatewayError if unknown."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise GatewayError(f"--tz {name!r}: unknown time zone") from exc


def dutyroom_signer(keydir: str, name: str | None) -> Signer | None:
    """The duty room's signer: ``dutyroom-<name>.pem``, or the only one in ``keydir``."""
    if name is not None:
        return Signer.load(keydir, dutyroom_kid(name))
    found = sorted(Path(keydir).glob("dutyroom-*.pem"))
    if len(found) > 1:
        raise GatewayError(
            f"--keydir {keydir}: several duty-room keys: choose one with --dutyroom NAME"
        )
    if not found:
        return None  # can watch, cannot acknowledge
    return Signer.load(keydir, found[0].stem)


def signer_file(path: Path) -> Signer:
    """The duty room's signer from a key file elsewhere than the key directory.

    UsageError unless it is named as a duty room's key is (``dutyroom-<name>.pem``).
    """
    if not path.name.startswith("dutyroom-") or path.suffix != ".pem":
        raise UsageError(f"--signing-key {path}: a duty room's key is named dutyroom-<name>.pem")
    return Signer(path.stem, read_private(path))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
