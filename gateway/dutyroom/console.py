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

from gateway.core.broker import BrokerSettings
from gateway.core.cancelling import raise_if_cancelling
from gateway.core.errors import EnvelopeError, GatewayError, UsageError
from gateway.dutyroom.board import DISPOSITION_WORDS, Board, paint
from gateway.relay.acks import make_ack
from gateway.relay.mqttsocket import NodeLoop
from gateway.security.envelope import Signer, open_gateway
from gateway.security.signkeys import dutyroom_kid, gateway_keys, read_private

log = logging.getLogger(__name__)

DISPOSITIONS = DISPOSITION_WORDS
REDRAW_S = 1.0
ACK_RETRY_S = 0.5  # --ack-after: an ack the broker did not take is sent again after this
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
        first = self.brokers[0]
        # a desk's own persistent session (the broker account's name, as Mosquitto binds
        # it): on another node of the cluster its subscriptions and what was queued for it
        # are there already, so a kept session is not subscribed again (resume)
        self.link = NodeLoop(
            self.brokers,
            identifier=first.username,
            resume=True,
            log_failure=lambda s, exc: log.warning(
                "broker %s:%d: %s; retrying", s.host, s.port, exc
            ),
        )
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
        self._acked: set[str] = set()
        self._auto_acking: set[str] = set()  # --ack-after: incidents waiting for their ack
        self._tasks: set[asyncio.Task[Any]] = set()
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
        base = f"{self.opts.prefix}/{self.opts.site}"
        # gateway status is per gateway, not per site (retained: arrives at once)
        topics = [
            *(f"{base}/{leaf}" for leaf in BOARD_TOPICS),
            f"{self.opts.prefix}/gateway/+/status",
        ]

        async def subscribed(_client: aiomqtt.Client) -> None:
            self._redraw()

        async def until_done(_client: aiomqtt.Client) -> None:
            await self.done.wait()

        def connected(_client: aiomqtt.Client) -> None:
            # A kept session delivers what was published while the desk was away (an
            # incident closed meanwhile too: its cleared retained copy), and no retained
            # message again: the board stays. A new one is subscribed again, and the
            # retained topics rebuild the board at once.
            if not self.link.resumed:
                self.board.reconnected()

        await self.link.run(
            lambda: topics,
            self._take,
            on_connect=connected,
            on_up=subscribed,
            serve=until_done,
        )

    @property
    def _client(self) -> aiomqtt.Client | None:
        return self.link.client

    @property
    def settings(self) -> BrokerSettings:
        """The broker (cluster node) in use, or last tried."""
        return self.link.node or self.brokers[0]

    def _take(self, topic: str, raw: bytes) -> None:
        """One message from the broker: verify, show, maybe acknowledge."""
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
            return
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
            and str(data.get("incident")) not in self._acked | self._auto_acking
        ):
            # (a message the broker sends again, after a failover, is acknowledged once)
            self._auto_acking.add(str(data.get("incident")))
            task = asyncio.create_task(self._ack_later(data, self.opts.ack_after))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.count += 1
        if self.opts.once is not None and self.count >= self.opts.once:
            self.done.set()

    async def _ack_later(self, data: dict[str, Any], after_ms: int) -> None:
        incident = str(data["incident"])
        try:
            await asyncio.sleep(after_ms / 1000.0)
            while not await self.ack(incident, str(data.get("site")), "genuine"):
                # the broker was lost meanwhile: again once subscribed to the next node
                await asyncio.sleep(ACK_RETRY_S)
                await self.link.up.wait()
        finally:
            self._auto_acking.discard(incident)

    async def ack(self, incident: str, site: str, disposition: str, *, again: bool = False) -> bool:
        """Publish the acknowledgement of ``incident`` (once, unless ``again``).

        False if it could not be sent (no connection, or the broker lost meanwhile): the
        board says so, and the operator can type it again.
        """
        client = self._client
        if client is None:
            self._redraw(f"not connected: {incident} not acknowledged")
            return False
        if incident in self._acked and not again:
            return True
        if self.signer is None:
            self._redraw(self._no_key)
            return True
        topic, payload = make_ack(
            self.signer,
            self.opts.prefix,
            site,
            incident=incident,
            by=self.opts.by,
            disposition=disposition,
        )
        try:
            await client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError as exc:
            raise_if_cancelling(exc)
            self._redraw(f"the broker did not take it ({exc}): {incident} not acknowledged")
            return False
        self._acked.add(incident)
        self.board.acked(incident)
        if self.opts.json:
            body = json.loads(json.loads(payload)["body"])
            self._emit({"topic": topic, "kind": "ack_sent", "payload": body, "at": _now()})
        else:
            self._redraw(f"acknowledged {incident}")
        return True

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
        task: asyncio.Task[Any]
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
        try:
            await client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError as exc:
            raise_if_cancelling(exc)
            self._redraw(f"the broker did not take it ({exc}): {post} not acknowledged")
            return
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
