"""The whole path on this machine, as a police duty room would see it (``campusguard demo``).

A private Mosquitto (unless ``--broker`` names one), the gateway with its watchers, a
virtual fleet (the real firmware on the MicroPython unix port, default 10 units on 2
links, one a guard post) and the police subscriber. A script presses buttons (panics, a
duress hold, a press that is then cancelled at the unit) while the guard misses a
check-in and the ladder escalates; the duty room acknowledges every incident. Each line
printed is a message as the police received it; the end is a summary.

The gateway's clock runs ``SPEED`` (60) times faster than real time so that a missed
check-in walks its ladder in seconds; the units live on the same time (heartbeat, incident
and cancel windows scaled, see :func:`demo_firmware`). A press is still a real press:
latency is measured from the harness writing ``button 1`` on the unit's control pty to
the police subscriber receiving the alarm, both on this process's monotonic clock.
Unit folders are written directly (``prepare_unit_dir``, the files ``campusguard
deploy`` would put on the unit) instead of through mpremote, which takes ~4 s per unit;
``--provision mpremote`` deploys each one through mpremote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gateway.core.broker import BrokerSettings
from gateway.core.errors import ExpectationFailed, GatewayError
from gateway.core.timefmt import parse_iso
from gateway.security.brokerconfig import Accounts
from gateway.security.signkeys import provision_one_room
from gateway.sim.fleet import DUTYROOM, Fleet, FleetPlan, FleetUnit, Provision, latency_stats
from gateway.sim.linkrelay import Impairment
from gateway.sim.localbroker import LocalBroker
from gateway.sim.police import Police, Received

log = logging.getLogger(__name__)

SPEED = 60.0
"""The demo gateway's clock runs this many times faster than real time."""
PRESS_SPACING_S = 2.5
DELIVER_WITHIN_S = 30.0
"""After the script, how long a press may still be on its way to the police (scaled by the
police's ``time_scale``): the wait ends when the police have every press, or names each
press still missing when this passes."""
"""Real seconds between two presses of one unit (past its scaled incident window)."""


def demo_plan(units: int, links: int, *, guard_post: bool = True) -> FleetPlan:
    """The demo school's register: service timings, a short duty ladder."""
    return FleetPlan(
        units=units,
        links=links,
        guard_post=guard_post and units >= 2,
        gateway_id="demo-gw",
        heartbeat_s=60,
        missed_heartbeats=3,
        long_press_ms=1500,
        cancel_window_s=600,
        incident_window_s=120,
        checkin_interval_min=5,
        grace_min=1,
        ladder=(("prompt_guard", 0), ("security_lead", 1), ("police", 2)),
    )


def demo_firmware(plan: FleetPlan, speed: float = SPEED) -> dict[str, int]:
    """unit.json overrides so that a unit lives on the gateway's accelerated time."""
    return {
        "heartbeat_ms": int(plan.heartbeat_s * 1000 / speed),
        "incident_window_ms": int(plan.incident_window_s * 1000 / speed),
        "cancel_window_ms": int(plan.cancel_window_s * 1000 / speed),
        "link_lost_ms": 60_000,
        "boot_spread_ms": 1000,
    }


@dataclass
class PressBook:
    """Every scripted press (monotonic time by unit) and the gesture presses beside them."""

    presses: dict[str, list[float]] = field(default_factory=dict)
    gesture: Counter[str] = field(default_factory=Counter)
    cancel_unit: str | None = None  # the unit whose press the script cancels

    def add(self, unit: FleetUnit) -> None:
        """Record ``unit``'s last press as a scripted alarm press."""
        assert unit.pressed_at is not None
        self.presses.setdefault(unit.id, []).append(unit.pressed_at)

    @property
    def total(self) -> int:
        """Scripted presses."""
        return sum(len(v) for v in self.presses.values())

    def delivered(self, police: Police) -> int:
        """Scripted presses the police have (counted by the incidents' ``presses``)."""
        return sum(self.delivered_by_unit(police).values())

    def delivered_by_unit(self, police: Police) -> dict[str, int]:
        """Unit -> its scripted presses the police have (as :meth:`delivered`, per unit)."""
        return {uid: self._have(uid, police) for uid in self.presses}

    def _have(self, uid: str, police: Police) -> int:
        reported = sum(int(d.get("presses", 0)) for d in police.incidents(uid).values())
        return max(0, min(len(self.presses[uid]), reported - self.gesture[uid]))

    def missing(self, police: Police) -> list[tuple[str, int, float]]:
        """(unit, press number from 1, monotonic time pressed) of each press the police lack.

        The police count a unit's presses, not which: the ones missing are its latest.
        """
        out = []
        for uid, times in self.presses.items():
            have = self._have(uid, police)
            out += [(uid, i + 1, times[i]) for i in range(have, len(times))]
        return out

    def latencies(self, police: Police) -> list[float]:
        """Press-to-police seconds of every press that opened an incident.

        Each new incident is matched to the latest unmatched press of its unit before it
        arrived (a press that folded into an open incident has no latency of its own).
        """
        out = []
        for uid, times in self.presses.items():
            taken: set[int] = set()
            for alarm in police.alarms(uid, update="new"):
                before = [i for i, t in enumerate(times) if t <= alarm.at and i not in taken]
                if before:
                    taken.add(before[-1])
                    out.append(alarm.at - times[before[-1]])
        return out


class Screen:
    """What the duty room sees: one line per message, as it arrives."""

    def __init__(self, out: TextIO, book: PressBook, t0: float) -> None:
        """``out``: stdout, or stderr when stdout carries JSON."""
        self.out = out
        self.book = book
        self.t0 = t0
        self.seen: Counter[str] = Counter()
        self.gateways: dict[str, str] = {}

    def __call__(self, m: Received) -> None:
        """Print one message."""
        t = f"+{m.at - self.t0:6.2f}s"
        p = m.payload if isinstance(m.payload, dict) else {}
        if m.kind == "alarm":
            self.seen[f"alarm_{p.get('update')}"] += 1
            extra = ""
            times = self.book.presses.get(str(p.get("unit")), [])
            if p.get("update") == "new" and times:
                before = [x for x in times if x <= m.at]
                if before:
                    extra = f"  ({(m.at - before[-1]) * 1000:.0f} ms after the press)"
            line = (
                f"{t}  ALARM  {p.get('update', ''):<10} {p.get('kind', ''):<7} "
                f"{p.get('unit', ''):<10} presses {p.get('presses', 0):<3} "
                f"{p.get('state', ''):<10} {p.get('place', '')}{extra}"
            )
        elif m.kind in ("event", "duty"):
            kind = str(p.get("kind", ""))
            detail = p.get("detail") or {}
            if kind == "escalation":
                kind = f"escalation:{detail.get('step')}"
            self.seen[kind] += 1
            if kind == "test":
                return  # the installation tests of the fresh units: summarised, not listed
            who = p.get("unit") or p.get("post") or m.topic.rsplit("/", 1)[-1]
            note = detail.get("action") or ""
            line = f"{t}  {m.kind.upper():<5}  {kind:<26} {who:<10} {note}"
        elif m.kind == "gateway":
            gid = m.topic.rsplit("/", 2)[-2]
            if self.gateways.get(gid) == p.get("state"):
                return  # the signed status is re-published every period: show changes only
            self.gateways[gid] = str(p.get("state"))
            line = f"{t}  GATEWAY {gid} {p.get('state')}"
        else:
            return
        print(line, file=self.out, flush=True)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the demo is told (``campusguard demo``'s options, gateway/cli/demo.py)."""

    units: int = 10
    links: int = 2
    presses: int = 20
    brokers: list[BrokerSettings] | None = None  # a cluster's nodes; None: a private Mosquitto
    prefix: str = "campusguard"
    loss: float = 0.0  # frame loss on every link, 0..1
    seed: int = 1  # of the link impairment
    provision: Provision = "fast"
    speed: float = SPEED
    keep: Path | None = None  # keep the fleet's folder here
    arc: tuple[str, ...] = ()  # receiving centres' DC-09 URLs, primary first
    arc_key_file: Path | None = None
    listen: str = "127.0.0.1:8443"  # the web duty room's (serve)
    deliver_within_s: float = DELIVER_WITHIN_S


async def _ack_later(police: Police, m: Received, delay: float) -> None:
    await asyncio.sleep(delay)  # the officer reads the screen, then acknowledges
    with contextlib.suppress(Exception):
        await police.ack(str(m.get("incident")), by="Officer Li (demo)")


async def _script(fleet: Fleet, police: Police, book: PressBook, presses: int, out: TextIO) -> None:
    """Press buttons: panics, one duress hold, one cancelled press; the guard misses a check-in."""
    alarm_units = [u for u in fleet.units.values() if u.spec.role != "guard_post"]
    guard = next((u for u in fleet.units.values() if u.spec.role == "guard_post"), None)
    if not alarm_units:
        return
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    if guard is not None:
        print(
            "guard checks in at the start of the demo; then no more (a missed check-in)", file=out
        )
        await guard.checkin()
    gap = max(PRESS_SPACING_S / max(1, len(alarm_units)), 0.5)
    duress_at = 1 if presses >= 3 and len(alarm_units) >= 2 else -1
    cancel_at = 2 if presses >= 3 and len(alarm_units) >= 3 else -1

    async def pressed(action: Coroutine[Any, Any, None], u: FleetUnit) -> asyncio.Task[None]:
        task = asyncio.create_task(action)
        await asyncio.sleep(0)  # the task runs up to its first wait: the button is down
        book.add(u)
        return task

    async def cancelled(u: FleetUnit) -> None:
        # the gesture follows the press at once: the unit takes a burst as a cancel only
        # while its series is open (its incident window after the last press, 2 s at x60),
        # so waiting to see the alarm at the police first could let the series close
        await (await pressed(u.press(), u))
        book.cancel_unit = u.id
        opened = time.monotonic()
        await u.cancel()
        book.gesture[u.id] += 5
        # the unit sends CANCEL once the burst is followed by its pause (700 ms)
        with contextlib.suppress(AssertionError):
            await police.expect_alarm(u, update="cancelled", within=10.0, since=opened)

    # a unit in the middle of a gesture (the duress hold, the cancel burst and its pause)
    # is not pressed by the next person: a press there would spoil the gesture (a sixth
    # press in a burst of five is no cancel)
    gestures: dict[str, asyncio.Task[None]] = {}

    async def free_unit(k: int) -> FleetUnit:
        n = len(alarm_units)
        for i in range(n):
            u = alarm_units[(k + i) % n]
            busy = gestures.get(u.id)
            if busy is None or busy.done():
                return u
        u = alarm_units[k % n]
        await asyncio.wait({gestures[u.id]})
        return u

    for k in range(presses):
        u = await free_unit(k)
        if k == duress_at:
            tasks.append(await pressed(u.hold(u.spec.long_press_ms / 1000 + 0.4), u))
            gestures[u.id] = tasks[-1]
        elif k == cancel_at:
            tasks.append(asyncio.create_task(cancelled(u)))
            gestures[u.id] = tasks[-1]
        else:
            tasks.append(await pressed(u.press(), u))
        await asyncio.sleep(gap)  # the next person presses a moment later
    if guard is not None:
        try:
            await police.expect_duty("escalation", step="police", within=60.0, since=started)
        except AssertionError:
            print("(the check-in ladder did not reach the police in time)", file=out)
        print("guard checks in at last", file=out)
        answered = time.monotonic()
        await guard.checkin()
        with contextlib.suppress(AssertionError):
            await police.expect_duty("acknowledged", within=5.0, since=answered)
    await asyncio.gather(*tasks)


async def run_demo(args: DemoOptions, out: TextIO) -> dict[str, Any]:
    """Build the school, run the script, return the summary (GatewayError: a bad option)."""
    if args.units < 1 or args.links < 1 or args.presses < 0:
        raise GatewayError("--units, --links must be at least 1 and --presses not negative")
    if not 1.0 <= args.speed <= 600.0:
        raise GatewayError("--speed must be between 1 and 600")
    with contextlib.ExitStack() as stack:
        if args.keep:
            workdir = args.keep
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cg-demo-")))
        speed = float(args.speed)
        plan = demo_plan(args.units, args.links, guard_post=speed != 1.0)
        if args.brokers is None:
            # locked down as broker-config writes it: TLS, a user per client, the ACL
            accounts = Accounts(
                prefix=args.prefix,
                gateways={plan.gateway_id: [plan.site]},
                dutyrooms={DUTYROOM: [plan.site]},
            )
            local = stack.enter_context(LocalBroker(workdir / "mqtt", accounts=accounts))
            gateway_nodes = [local.settings(f"gateway-{plan.gateway_id}")]
            police_nodes = [local.settings(f"dutyroom-{DUTYROOM}")]
            print(f"broker: private Mosquitto at {local.url} (TLS, passwords, ACL)", file=out)
        else:
            # one account for both: the nodes of one cluster, in order (failover)
            gateway_nodes = police_nodes = args.brokers
            print(f"broker: {', '.join(n.url for n in gateway_nodes)}", file=out)
        t0 = time.monotonic()
        book = PressBook()
        screen = Screen(out, book, t0)
        keydir = workdir / "fleet" / "keys"
        # one machine plays both: the gateway's key pair and the duty room's side by side
        provision_one_room(keydir, plan.gateway_id, DUTYROOM)
        police = Police(
            police_nodes,
            keydir=keydir,
            dutyroom=DUTYROOM,
            prefix=args.prefix,
            by="Officer Li (demo)",
        )
        police.listen(screen)
        acks: list[asyncio.Task[None]] = []

        def duty_room(m: Received) -> None:
            if m.kind == "alarm" and m.get("update") == "new":
                acks.append(asyncio.create_task(_ack_later(police, m, 1.5)))

        police.listen(duty_room)
        fleet = Fleet(
            workdir / "fleet",
            plan,
            broker_url=gateway_nodes,
            prefix=args.prefix,
            impairment=Impairment(drop=args.loss) if args.loss else None,
            seed=args.seed,
            provision=args.provision,
            firmware=demo_firmware(plan, speed),
            install_test=True,
            clock_speed=speed,
            concurrency=16,
            arc=args.arc,
            arc_key_file=args.arc_key_file,
            keydir=keydir,
        )
        police.clock = fleet.clock.now  # acks dated on the demo's accelerated clock
        async with police:
            print(
                f"starting {args.units} virtual units (real firmware, MicroPython) on "
                f"{args.links} links, the gateway (clock x{speed:g}) and the police console",
                file=out,
            )
            async with fleet:
                await fleet.wait_connected()
                print(
                    f"up in {time.monotonic() - t0:.1f} s; {args.presses} presses follow",
                    file=out,
                )
                await _script(fleet, police, book, args.presses, out)
                within = args.deliver_within_s
                missing = where_missing(
                    await wait_delivered(police, book, within),
                    book,
                    heard=lambda uid: sum(1 for _, f in fleet.heard(uid) if f.type.name == "ALARM"),
                    outbox=fleet.gateway.store.pending_count(),
                    t0=t0,
                    within_s=within,
                )
                for m in missing:
                    print(f"MISSING  {m['text']}", file=out, flush=True)
                unacked = await wait_acknowledged(police, acks, args.deliver_within_s)
                for iid in unacked:
                    print(
                        f"NOT ACKNOWLEDGED  {iid}: the duty room's ack has not come back from"
                        f" the gateway within {args.deliver_within_s:g} s",
                        file=out,
                        flush=True,
                    )
                arc = fleet.gateway.arc
                if arc is not None:  # what the police have, the receiving centre has too
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(30.0):
                            name = arc.transmitter.settings.name
                            await arc.transmitter.wait_until(lambda: arc.queue.waiting(name) == 0)
                for t in acks:
                    t.cancel()
                await asyncio.gather(*acks, return_exceptions=True)
                summary = _summary(args, book, police, screen, fleet)
                summary["missing"] = missing
                summary["not_acknowledged"] = unacked
                _final_table(police, out, t0)
        if args.keep:
            print(
                f"\njournal kept: {fleet.db}\n"
                f"  campusguard report --db {fleet.db} --month <YYYY-MM> "
                f"--config {fleet.register}",
                file=out,
            )
            summary["journal"] = str(fleet.db)
    return summary


async def wait_delivered(
    police: Police, book: PressBook, within_s: float
) -> list[tuple[str, int, float]]:
    """The presses still missing (:meth:`PressBook.missing`) once the police have all.

    Waits until the police have every scripted press, or ``within_s`` passed (scaled by
    the police's ``time_scale``). Checked at every message the police receive: the wait
    ends the moment the last press arrives, not after a fixed time.
    """
    with contextlib.suppress(ExpectationFailed):
        await police.wait_for(lambda: not book.missing(police), within_s, "every press")
    return book.missing(police)


def where_missing(
    missing: list[tuple[str, int, float]],
    book: PressBook,
    *,
    heard: Callable[[str], int],
    outbox: int,
    t0: float,
    within_s: float,
) -> list[dict[str, Any]]:
    """Each missing press and where it stands, for a person and for ``--json``.

    ``unit``, ``press`` (its number), ``of``, ``pressed_s`` (since ``t0``, monotonic),
    ``heard`` (``heard(unit)``: ALARM frames the links carried from the unit), ``outbox``
    (messages the gateway has not handed to the broker yet) and ``text``.
    """
    out = []
    for uid, n, at in missing:
        of = len(book.presses[uid])
        frames = heard(uid)
        if not frames:
            where = "the gateway heard no ALARM frame from it (the unit or its link)"
        elif outbox:
            where = (
                f"the gateway heard {frames} ALARM frame(s) from it; {outbox} message(s)"
                " still wait in its outbox (the broker?)"
            )
        else:
            where = (
                f"the gateway heard {frames} ALARM frame(s) from it and its outbox is empty"
                " (folded into an incident, or a press the unit took as part of a gesture)"
            )
        text = (
            f"unit {uid}: press {n} of {of} (at +{at - t0:.2f} s) has not reached the"
            f" police within {within_s:g} s: {where}"
        )
        out.append(
            {"unit": uid, "press": n, "of": of, "pressed_s": round(at - t0, 3),
             "heard": frames, "outbox": outbox, "text": text}
        )  # fmt: skip
    return out


async def wait_acknowledged(
    police: Police, acks: list[asyncio.Task[None]], within_s: float
) -> list[str]:
    """The open incidents whose police ack has not come back, once every ack is back.

    Waits until the duty room's acks (``acks``, sent 1.5 s after each new alarm) are out
    and the gateway has published each incident as acknowledged, or ``within_s`` passed.
    Closed incidents need none (a cancelled one may close before its ack).
    """

    def unacked() -> list[str]:
        return sorted(
            iid
            for iid, d in police.incidents().items()
            if not d.get("police_ack_at") and d.get("state") != "closed"
        )

    with contextlib.suppress(TimeoutError, ExpectationFailed):
        async with asyncio.timeout(within_s):
            await asyncio.gather(*acks, return_exceptions=True)
            await police.wait_for(lambda: not unacked(), within_s, "every ack")
    return unacked()


def _summary(
    args: DemoOptions, book: PressBook, police: Police, screen: Screen, fleet: Fleet
) -> dict[str, Any]:
    delivered = book.delivered(police)
    lat = book.latencies(police)
    incidents = police.incidents()
    sent = _sent(fleet)
    cancel = _cancel_outcome(book, police, fleet)
    checks: dict[str, bool | None] = {
        "every_press_delivered": delivered == book.total,
        "cancel_landed": cancel["landed"] if cancel["scripted"] else None,
        # the units' uptime runs in real time: first_press_at is checked at --speed 1 only
        "first_press_within_5s_before_received": (
            all(_first_press_ok(d) for d in incidents.values()) if args.speed == 1.0 else None
        ),
    }
    return {
        "presses": book.total,
        "delivered": delivered,
        "lost": book.total - delivered,
        "latency_ms": latency_stats(lat),
        "units": len(fleet.units),
        "links": len(fleet.relays),
        "speed": args.speed,
        "sent": sent,
        "incidents": len(incidents),
        "police_acknowledged": sum(1 for d in incidents.values() if d.get("police_ack_at")),
        "duress": sum(1 for d in incidents.values() if d.get("kind") == "duress"),
        # a cancelled incident also closes once acknowledged and quiet: count cancelled_at
        "cancelled": sum(1 for d in incidents.values() if d.get("cancelled_at")),
        "cancel": cancel,
        "missed_checkin": screen.seen["missed_checkin"],
        "escalation_police": screen.seen["escalation:police"],
        "installation_tests": screen.seen["test"],
        "loss": args.loss,
        "checks": checks,
        **({"arc": _arc_counts(fleet)} if args.arc else {}),
    }


def _arc_counts(fleet: Fleet) -> dict[str, int]:
    """Messages the receiving centre ACKed, those still queued, and its NAKs."""
    arc = fleet.gateway.arc
    if arc is None:
        return {}
    t = arc.transmitter
    return {
        "acked": t.counts["acked"],
        "waiting": arc.queue.waiting(t.settings.name),
        "nak": t.counts["nak"],  # > 0: our timestamps were off (they use the real clock)
    }


def _sent(fleet: Fleet) -> dict[str, int]:
    """What the units put on the wire (heard on the links, each counter once).

    A series is one ALARM ``press_ms`` of one unit boot: what the unit took as one alarm
    (the gateway folds series of one unit within its incident window into one incident).
    """
    frames: dict[tuple[int, int, int], Any] = {}
    for _, f in fleet.heard():
        frames.setdefault((f.unit, f.epoch, f.seq), f)
    alarms = [f for f in frames.values() if f.type.name == "ALARM"]
    series = {(f.unit, f.epoch, int(f.body.press_ms)) for f in alarms}
    return {
        "alarm_frames": len(alarms),
        "alarm_series": len(series),
        "cancel_frames": sum(1 for f in frames.values() if f.type.name == "CANCEL"),
        "checkin_frames": sum(1 for f in frames.values() if f.type.name == "CHECKIN"),
    }


def _cancel_outcome(book: PressBook, police: Police, fleet: Fleet) -> dict[str, Any]:
    """Did the script's cancel reach the police as ``cancelled``? If not, why not."""
    uid = book.cancel_unit
    if uid is None:
        return {"scripted": False, "landed": False, "why_not": "no cancel in this script"}
    cancelled = [d for d in police.incidents(uid).values() if d.get("cancelled_at")]
    if cancelled:
        return {"scripted": True, "unit": uid, "landed": True, "why_not": None}
    sent = any(f.type.name == "CANCEL" for _, f in fleet.heard(uid))
    why = (
        "the unit sent CANCEL but no incident of it was cancelled (the CANCEL named an "
        "ALARM the gateway did not have)"
        if sent
        else "the unit sent no CANCEL: its series had closed (incident window) before the "
        "burst ended, or the burst was not exactly the cancel gesture"
    )
    return {"scripted": True, "unit": uid, "landed": False, "why_not": why}


def _first_press_ok(d: dict[str, Any]) -> bool:
    """``first_press_at`` within 5 s before ``received_at``, never after it."""
    first, received = _ts(d.get("first_press_at")), _ts(d.get("received_at"))
    return first is not None and received is not None and 0.0 <= received - first <= 5.0


def _ts(text: Any) -> float | None:
    return parse_iso(text)


def _final_table(police: Police, out: TextIO, t0: float) -> None:
    now = time.monotonic()
    print("\nduty room, incidents at the end:", file=out)
    print(
        f"{'incident':<30} {'unit':<10} {'kind':<7} {'presses':>7} {'state':<10} {'age':>6}  place",
        file=out,
    )
    first_seen: dict[str, float] = {}
    for m in police.alarms():
        first_seen.setdefault(str(m.get("incident")), m.at)
    for iid, d in police.incidents().items():
        age = now - first_seen.get(iid, now)
        print(
            f"{iid:<30} {d.get('unit', ''):<10} {d.get('kind', ''):<7} {d.get('presses', 0):>7} "
            f"{d.get('state', ''):<10} {age:5.1f}s  {d.get('place', '')}",
            file=out,
        )


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary of :func:`run_demo` for a person, a few lines."""
    lat = summary["latency_ms"]
    lines = [
        f"\nsummary: {summary['presses']} presses, {summary['delivered']} delivered, "
        f"{summary['lost']} lost; press to police p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
        f"max {lat['max']} ms\n"
        f"         {summary['incidents']} incidents ({summary['police_acknowledged']} "
        f"acknowledged by the police), duress {summary['duress']}, cancelled "
        f"{summary['cancelled']}, missed check-ins {summary['missed_checkin']} "
        f"(escalated to the police {summary['escalation_police']}), installation tests "
        f"{summary['installation_tests']}/{summary['units']}"
    ]
    failed = failed_checks(summary)
    if failed:
        lines.append(f"         checks failed: {', '.join(failed)}")
    cancel = summary["cancel"]
    if cancel["scripted"] and not cancel["landed"]:
        lines.append(f"         the scripted cancel did not land: {cancel['why_not']}")
    if "arc" in summary:
        arc = summary["arc"]
        lines.append(
            f"         receiving centre: {arc.get('acked', 0)} messages ACKed, "
            f"{arc.get('waiting', 0)} still queued"
        )
    return lines


def failed_checks(summary: dict[str, Any]) -> list[str]:
    """The names of the summary's checks that failed (None: not checked this run)."""
    return [k for k, v in summary["checks"].items() if v is False]
