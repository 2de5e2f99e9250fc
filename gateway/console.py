"""``campusguard console``: the police duty room's view of live alarms, and the ack.

A plain terminal table (incidents: number, place, kind, presses, age, state; recent
events), redrawn on every message. Type an incident's number or id and Enter to
acknowledge it (``3 false`` or ``3 test`` sets the disposition; default genuine).
``--json`` prints one JSON line per received message instead (for scripts and tests);
``--ack-after MS`` acknowledges every new incident after MS milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiomqtt

from gateway.mqttsocket import guard_write_watch
from gateway.relay import BrokerSettings

log = logging.getLogger(__name__)

RECENT_EVENTS = 8
DISPOSITIONS = {"genuine": "genuine", "false": "false_alarm", "test": "test"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the subcommand's options."""
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt:// or mqtts:// URL")
    parser.add_argument("--ca-file", help="CA certificate(s) to verify the broker (mqtts)")
    parser.add_argument("--prefix", default="campusguard", help="MQTT topic prefix")
    parser.add_argument("--site", default="+", help="one site id (default: every site)")
    parser.add_argument("--by", default="duty-room", help="who acknowledges (sent with the ack)")
    parser.add_argument(
        "--ack-after", type=int, metavar="MS", help="acknowledge every new incident after MS ms"
    )
    parser.add_argument("--once", type=int, metavar="N", help="exit after N messages")
    parser.add_argument("--json", action="store_true", help="one JSON line per message")


@dataclass
class Board:
    """What the duty room knows: incidents by id (numbered in arrival order), events."""

    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    numbers: dict[int, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    gateways: dict[str, str] = field(default_factory=dict)

    def take(self, topic: str, data: Any) -> str:
        """Fold a message in; return its kind (alarm, event, duty, gateway, other)."""
        parts = topic.split("/")
        if len(parts) >= 3 and parts[-3] == "gateway" and parts[-1] == "status":
            # <prefix>/gateway/<gateway-id>/status
            if isinstance(data, dict):
                self.gateways[parts[-2]] = str(data.get("state"))
                return "gateway"
            return "other"
        kind = parts[-2] if len(parts) >= 2 else "other"
        if kind == "alarm" and isinstance(data, dict) and "incident" in data:
            iid = str(data["incident"])
            if iid not in self.incidents:
                self.numbers[len(self.numbers) + 1] = iid
            old = self.incidents.get(iid, {})
            # updates can arrive twice (at least once): keep the newest
            if int(data.get("update_no", 0)) >= int(old.get("update_no", 0)):
                self.incidents[iid] = data
            return "alarm"
        if kind in ("event", "duty") and isinstance(data, dict):
            self.events.append(data)
            del self.events[:-RECENT_EVENTS]
            return kind
        if len(parts) >= 2 and parts[-2] == "gateway" and isinstance(data, dict):
            self.gateways[parts[-1]] = str(data.get("state"))
            return "gateway"
        return "other"

    def resolve(self, text: str) -> str | None:
        """An incident from its number or id."""
        if text.isdigit():
            return self.numbers.get(int(text))
        return text if text in self.incidents else None

    def render(self) -> str:
        """The table as text."""
        now = time.time()
        lines = [
            f"CampusGuard duty room  {datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z  gateways: "
            + (", ".join(f"{g} {s}" for g, s in self.gateways.items()) or "-"),
            "",
            f"{'#':>3}  {'state':<11} {'kind':<8} {'presses':>7} {'age':>7}  place (unit)",
        ]
        for n, iid in sorted(self.numbers.items(), reverse=True):
            d = self.incidents[iid]
            age = now - _ts(d.get("first_press_at") or d.get("received_at"))
            lines.append(
                f"{n:>3}  {d.get('state', '?'):<11} {d.get('kind', '?'):<8} "
                f"{d.get('presses', 0):>7} {_age(age):>7}  {d.get('place')} ({d.get('unit')})"
            )
        lines += ["", "recent events:"]
        for e in reversed(self.events):
            who = e.get("unit") or e.get("post") or ""
            lines.append(f"  {e.get('at', '')}  {e.get('kind', '?'):<16} {who}")
        lines += ["", "acknowledge: type a number (or '<number> false' / '<number> test') + Enter"]
        return "\n".join(lines)


def _ts(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    return (
        f"{s}s"
        if s < 60
        else f"{s // 60}m{s % 60:02d}s"
        if s < 3600
        else f"{s // 3600}h{s % 3600 // 60:02d}m"
    )


class Console:
    """One broker connection: receive, show, acknowledge."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Options from the command line."""
        self.args = args
        self.settings = BrokerSettings.from_url(args.broker, ca_file=args.ca_file)
        self.board = Board()
        self.count = 0
        self.done = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._acked: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Connect (retrying) until ``--once`` messages or interrupted."""
        s = self.settings
        loop = asyncio.get_running_loop()
        interactive = not self.args.json and sys.stdin is not None and not sys.stdin.closed
        if interactive:
            with contextlib.suppress(ValueError, OSError, NotImplementedError):
                loop.add_reader(sys.stdin.fileno(), self._on_stdin)
        while not self.done.is_set():
            try:
                async with guard_write_watch(
                    aiomqtt.Client(
                        s.host,
                        s.port,
                        username=s.username,
                        password=s.password,
                        tls_context=s.tls_context(),
                    )
                ) as client:
                    self._client = client
                    base = f"{self.args.prefix}/{self.args.site}"
                    for leaf in ("alarm/+", "event/+", "duty/+"):
                        await client.subscribe(f"{base}/{leaf}", qos=1)
                    # gateway status is per gateway, not per site (retained: arrives at once)
                    await client.subscribe(f"{self.args.prefix}/gateway/+/status", qos=1)
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
                log.warning("broker %s:%d: %s; retrying", s.host, s.port, exc)
                await asyncio.sleep(1.0)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            raw = m.payload if isinstance(m.payload, bytes) else str(m.payload or "").encode()
            try:
                data: Any = json.loads(raw) if raw else None
            except ValueError:
                data = raw.decode("utf-8", "replace")
            topic = str(m.topic)
            kind = self.board.take(topic, data)
            if self.args.json:
                self._emit({"topic": topic, "kind": kind, "payload": data, "at": _now()})
            else:
                self._redraw()
            if (
                kind == "alarm"
                and self.args.ack_after is not None
                and isinstance(data, dict)
                and data.get("update") == "new"
            ):
                task = asyncio.create_task(self._ack_later(data))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self.count += 1
            if self.args.once is not None and self.count >= self.args.once:
                self.done.set()

    async def _ack_later(self, data: dict[str, Any]) -> None:
        await asyncio.sleep(self.args.ack_after / 1000.0)
        await self.ack(str(data["incident"]), str(data.get("site")), "genuine")

    async def ack(self, incident: str, site: str, disposition: str) -> None:
        """Publish the acknowledgement of ``incident``."""
        client = self._client
        if client is None or incident in self._acked:
            return
        payload = json.dumps({"by": self.args.by, "disposition": disposition})
        topic = f"{self.args.prefix}/{site}/ack/{incident}"
        await client.publish(topic, payload, qos=1)
        self._acked.add(incident)
        if self.args.json:
            self._emit(
                {"topic": topic, "kind": "ack_sent", "payload": json.loads(payload), "at": _now()}
            )
        else:
            self._redraw(f"acknowledged {incident}")

    def _on_stdin(self) -> None:
        line = sys.stdin.readline()
        if not line:
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
            return
        words = line.split()
        if not words:
            return
        iid = self.board.resolve(words[0])
        disposition = DISPOSITIONS.get(words[1] if len(words) > 1 else "genuine")
        if iid is None or disposition is None:
            self._redraw(f"no incident {words[0]!r} (or unknown disposition)")
            return
        site = str(self.board.incidents[iid].get("site"))
        task = asyncio.create_task(self.ack(iid, site, disposition))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _redraw(self, note: str = "") -> None:
        if self.args.json:
            return
        sys.stdout.write(
            "\x1b[H\x1b[2J" + self.board.render() + ("\n" + note if note else "") + "\n> "
        )
        sys.stdout.flush()

    def _emit(self, obj: dict[str, Any]) -> None:
        print(json.dumps(obj, separators=(",", ":")), flush=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run(args: argparse.Namespace) -> int:
    """Run the console until interrupted (or ``--once`` messages)."""
    try:
        asyncio.run(Console(args).run())
    except KeyboardInterrupt:
        return 130
    return 0
