"""boards.yaml -> validated, immutable configuration (fields documented in boards.yaml)."""

from __future__ import annotations

import difflib
import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from gateway.core.errors import ConfigError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,47}$")
_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ROLES = ("shop", "home", "guard_post", "campus", "checkpoint")
PLAIN_KINDS = ("panic", "medical", "fire", "silent")
PIN_NAMES = ("button", "tamper", "led", "buzzer", "battery_adc", "uart_tx", "uart_rx")
OPTIONAL_PINS = ("checkin", "mains", "rs485_de")
# a patrol checkpoint has one button, the check-in input, and no alarm button at all: a
# short press is a scan, a long press a duress CHECKIN; it never sends ALARM
CHECKPOINT_PINS = ("checkin", "tamper", "led", "buzzer", "battery_adc", "uart_tx", "uart_rx")

# The ESP32 (an ESP32-WROOM-32 module, what firmware/board/esp32.py drives; a WROVER's
# PSRAM takes GPIO 16 and 17 as well, the default UART pins). GPIO 6..11 are the
# module's SPI flash. 34..39 are inputs without internal pulls. The strapping pins'
# levels at reset choose how the chip boots: a panic button held on GPIO 0 (or 2) during
# a reset leaves the unit in the ROM's download mode, no firmware and no watchdog, until
# someone power-cycles it; GPIO 12 pulled high selects 1.8 V flash and it does not boot.
ESP32_GPIOS = frozenset((*range(0, 20), 21, 22, 23, 25, 26, 27, *range(32, 40)))
ESP32_FLASH_GPIOS = frozenset(range(6, 12))
ESP32_INPUT_ONLY = frozenset(range(34, 40))
ESP32_STRAPPING = frozenset((0, 2, 5, 12, 15))
ESP32_ADC1 = frozenset(range(32, 40))
# inputs that board/esp32.py pulls internally (to 3V3; mains to GND) and that a person
# or a switch can hold at reset; outputs
PULLED_INPUTS = ("button", "checkin", "tamper", "mains")
OUTPUT_PINS = ("led", "buzzer", "uart_tx", "rs485_de")
# what holds its pin at a level through a reset: a person, a switch, the mains sense, and
# the pull-down that keeps an RS-485 driver off while the chip boots
HELD_AT_RESET = (*PULLED_INPUTS, "rs485_de")


def esp32_pin_problem(pins: dict[str, int]) -> str | None:
    """Why this wiring cannot work on an ESP32, or None if it can.

    Refused: a GPIO the chip lacks or its flash uses, an output or a pulled input on an
    input-only GPIO, a button or switch on a strapping pin, a battery ADC off ADC1, and
    one GPIO used twice.
    """
    used: dict[int, str] = {}
    for name, gpio in pins.items():
        if gpio not in ESP32_GPIOS:
            return f"{name}: the ESP32 has no GPIO {gpio}"
        if gpio in ESP32_FLASH_GPIOS:
            return f"{name}: GPIO {gpio} is wired to the module's flash (6..11)"
        if gpio in used:
            return f"{name}: GPIO {gpio} is already {used[gpio]}"
        used[gpio] = name
        if name in OUTPUT_PINS and gpio in ESP32_INPUT_ONLY:
            return f"{name}: GPIO {gpio} is input only (34..39)"
        if name in PULLED_INPUTS and gpio in ESP32_INPUT_ONLY:
            return f"{name}: GPIO {gpio} has no internal pull resistor (34..39)"
        if name in HELD_AT_RESET and gpio in ESP32_STRAPPING:
            return (
                f"{name}: GPIO {gpio} is a strapping pin (0, 2, 5, 12, 15): held at a"
                " reset it can stop the unit from booting its firmware"
            )
        if name in OUTPUT_PINS and gpio == 12:
            return f"{name}: GPIO 12 pulled high at reset selects 1.8 V flash"
        if name == "battery_adc" and gpio not in ESP32_ADC1:
            return f"{name}: GPIO {gpio} is not on ADC1 (32..39)"
    return None


STEPS = ("prompt_guard", "security_lead", "police")

# name -> (default, minimum, maximum)
TIMINGS: dict[str, tuple[int, int, int]] = {
    "heartbeat_s": (60, 10, 3600),
    "missed_heartbeats": (3, 2, 10),
    "long_press_ms": (3000, 1000, 10000),
    "cancel_window_s": (30, 5, 600),
    "test_interval_h": (24, 1, 168),
    "incident_window_s": (120, 10, 3600),
}

# the fields each kind of entry may have: any other name is a mistake (a misspelt
# `heartbeat_s` would otherwise leave the default in force without a word)
TOP_FIELDS = (
    "version", "gateway", "defaults", "links", "sites", "units", "posts", "arc", "calendar",
    "patrols", "cameras", "sms",
)  # fmt: skip
GATEWAY_FIELDS = ("id", "site", "timezone")
LINK_FIELDS = ("id", "port", "baud")
SITE_FIELDS = (
    "id", "name", "address", "security_lead", "deputies", "account", "partition", "position",
)  # fmt: skip
PERSON_FIELDS = ("name", "phone")
SMS_FIELDS = (
    "port", "baud", "retries", "retry_s", "delivery_timeout_min", "offline_after_h", "faults",
)  # fmt: skip
SMS_FAULTS = ("escalation", "patrol", "tamper", "low_battery", "offline", "not_installed")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{2,24}$")
UNIT_FIELDS = (
    "id", "addr", "site", "place", "owner", "role", "kind", "link", "pins", "zone", "cameras",
    "position",
    *TIMINGS,
)  # fmt: skip
POSITION_LIMIT_M = 100_000.0
"""A ``position`` coordinate (metres on the site plan) is within this of the origin."""
_ACCOUNT = re.compile(r"^[0-9A-Fa-f]{3,16}$")
ARC_FIELDS = (
    "id", "account", "protocol", "key_format", "null_interval_s", "ack_timeout_s",
    "failover_after", "retry_s", "receivers",
)  # fmt: skip
RECEIVER_FIELDS = ("id", "host", "port", "receiver", "line")
ARC_PROTOCOLS = ("adm-cid", "sia-dcs")
KEY_FORMATS = ("text", "hex", "none")
_HEX_ID = re.compile(r"^[0-9A-Fa-f]{1,6}$")
POST_FIELDS = ("id", "site", "unit", "checkin_interval_min", "grace_min", "shifts", "escalation")
SHIFT_FIELDS = ("days", "start", "end")
STEP_FIELDS = ("step", "after_min")
CALENDAR_FIELDS = ("school_days", "terms", "holidays", "makeup_days")
SPAN_FIELDS = ("name", "start", "end")
PATROL_FIELDS = (
    "id", "site", "leader", "checkpoints", "order", "days", "windows", "max_round_min",
    "max_between_min", "escalation",
)  # fmt: skip
WINDOW_FIELDS = ("start", "end")
PATROL_STEPS = ("remind_leader", "security_lead", "police")
PATROL_ORDERS = ("ordered", "any")
PATROL_DAYS = ("school", "every")


@dataclass(frozen=True, slots=True)
class Link:
    """One serial link: a UART, an RS-485 bus or a radio modem."""

    id: str
    port: str
    baud: int


@dataclass(frozen=True, slots=True)
class Site:
    """A school or kindergarten and its surroundings."""

    id: str
    name: str
    address: str
    security_lead: dict[str, str]
    account: str | None = None  # SIA DC-09 account at the alarm receiving centre (hex)
    partition: int = 1  # Contact ID group of the site's reports
    deputies: tuple[dict[str, str], ...] = ()  # tried in order after the security lead
    # the campus's centre on the site plan: metres east and north of the plan's origin
    position: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Unit:
    """One alarm unit as registered; keys are not here."""

    id: str
    addr: int
    site: str
    place: str
    owner: str
    role: str
    link: str
    pins: dict[str, int]
    kind: str
    heartbeat_s: int
    missed_heartbeats: int
    long_press_ms: int
    cancel_window_s: int
    test_interval_h: int
    incident_window_s: int
    zone: int | None = None  # Contact ID zone at the receiving centre, unique per account
    cameras: tuple[str, ...] = ()  # cameras[].id that see the unit's place
    position: tuple[float, float] | None = None  # metres east, north on the site plan


@dataclass(frozen=True, slots=True)
class Shift:
    """A weekly duty period: on ``days`` (0 = Monday) from ``start`` to ``end`` minutes."""

    days: tuple[int, ...]
    start_min: int
    end_min: int


@dataclass(frozen=True, slots=True)
class Step:
    """One rung of the escalation ladder, ``after_min`` after the missed deadline."""

    step: str
    after_min: int


@dataclass(frozen=True, slots=True)
class Post:
    """A guard post with its shifts and escalation ladder."""

    id: str
    site: str
    unit: str
    checkin_interval_min: int
    grace_min: int
    shifts: tuple[Shift, ...]
    escalation: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class DateSpan:
    """Whole local days ``start``..``end`` (both included): a term or a holiday."""

    start: date
    end: date
    name: str = ""

    def contains(self, day: date) -> bool:
        """True when ``day`` lies in the span."""
        return self.start <= day <= self.end


@dataclass(frozen=True, slots=True)
class CalendarSpec:
    """The school calendar as boards.yaml gives it (gateway/calendar.py reads it)."""

    school_days: tuple[int, ...] = (0, 1, 2, 3, 4)  # 0 = Monday
    terms: tuple[DateSpan, ...] = ()  # none: every week of the year is term time
    holidays: tuple[DateSpan, ...] = ()
    makeup_days: tuple[date, ...] = ()  # weekend days taught as school days (调休)


@dataclass(frozen=True, slots=True)
class Window:
    """A patrol time window, local minutes of the day ``start_min``..``end_min``."""

    start_min: int
    end_min: int


@dataclass(frozen=True, slots=True)
class Patrol:
    """A patrol route: its checkpoints, windows, time limits and escalation ladder."""

    id: str
    site: str
    checkpoints: tuple[str, ...]  # checkpoint unit ids, in route order
    ordered: bool
    school_days_only: bool  # windows on school days by the calendar (else every day)
    windows: tuple[Window, ...]
    max_round_min: int
    max_between_min: int
    escalation: tuple[Step, ...]
    leader: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ArcReceiver:
    """One receiver of the alarm receiving centre; its key is ``dc09-<id>.key``."""

    id: str
    host: str
    port: int
    receiver: str = "0"  # DC-09 receiver number (hex)
    line: str = "0"  # DC-09 line prefix (hex)


@dataclass(frozen=True, slots=True)
class Arc:
    """The alarm receiving centre: receivers (primary first), protocol, key form, timings."""

    id: str
    receivers: tuple[ArcReceiver, ...]
    account: str | None = None  # for sites without their own
    protocol: str = "adm-cid"
    key_format: str = "text"  # text | hex | none (no encryption)
    null_interval_s: int = 60
    ack_timeout_s: int = 10
    failover_after: int = 3
    retry_s: int = 60


@dataclass(frozen=True, slots=True)
class Config:
    """The whole register."""

    path: str
    gateway_id: str
    site: str
    timezone: str
    links: dict[str, Link]
    sites: dict[str, Site]
    units: dict[str, Unit]
    posts: dict[str, Post] = field(default_factory=dict)
    arc: Arc | None = None
    calendar: CalendarSpec = field(default_factory=CalendarSpec)
    patrols: dict[str, Patrol] = field(default_factory=dict)
    cameras: dict[str, Camera] = field(default_factory=dict)
    sms: SmsSettings | None = None


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, name: str, problem: str) -> ConfigError:
        return ConfigError(self.path, where, name, problem)

    def mapping(
        self, value: Any, where: str, name: str, known: tuple[str, ...] | None = None
    ) -> dict[str, Any]:
        """``value`` as a mapping; with ``known``, a field not in it is an error."""
        if not isinstance(value, dict):
            raise self.fail(where, name, f"must be a mapping, got {type(value).__name__}")
        if known is not None:
            self.only(value, where, known)
        return value

    def only(self, d: dict[str, Any], where: str, known: tuple[str, ...]) -> None:
        """A field of ``d`` that is not one of ``known`` is an error naming the nearest."""
        for key in d:
            if key not in known:
                raise self.fail(where, str(key), unknown_field(str(key), known))

    def seq(self, value: Any, where: str, name: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, name, f"must be a list, got {type(value).__name__}")
        return value

    def text(self, d: dict[str, Any], where: str, name: str, default: str | None = None) -> str:
        value = d.get(name, default)
        if value is None:
            raise self.fail(where, name, "missing")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, name, "must be a non-empty string")
        return value

    def ident(self, d: dict[str, Any], where: str, name: str) -> str:
        value = self.text(d, where, name)
        if not _ID.match(value):
            raise self.fail(where, name, f"{value!r}: letters, digits and '-' only, at most 48")
        return value

    def integer(
        self, d: dict[str, Any], where: str, name: str, lo: int, hi: int, default: int | None = None
    ) -> int:
        value = d.get(name, default)
        if value is None:
            raise self.fail(where, name, "missing")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, name, f"{value!r} is not a whole number")
        if not lo <= value <= hi:
            raise self.fail(where, name, f"{value} is outside {lo}..{hi}")
        return value

    def ref(self, d: dict[str, Any], where: str, name: str, known: dict[str, Any]) -> str:
        value = self.text(d, where, name)
        if value not in known:
            raise self.fail(where, name, f"{value!r} is not defined (known: {', '.join(known)})")
        return value


def unknown_field(name: str, known: tuple[str, ...]) -> str:
    """The problem text for a field name that is not one of ``known``."""
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if not near:  # e.g. `heartbeat` for `heartbeat_s`: a prefix is near enough
        near = [k for k in known if k.startswith(name) or name.startswith(k)][:1]
    hint = f"did you mean '{near[0]}'?" if near else f"valid: {', '.join(known)}"
    return f"unknown field; {hint}"


def unit_not_found(unit_id: str, path: str | Path, units: dict[str, Any]) -> str:
    """The message for a unit id that is not in the register."""
    near = difflib.get_close_matches(unit_id, list(units), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else f" (units: {', '.join(units)})"
    return f"unit {unit_id!r} is not in {path}{hint}"


def _days(r: _Reader, text: Any, where: str) -> tuple[int, ...]:
    if not isinstance(text, str):
        raise r.fail(where, "days", "must be a string like 'mon-fri' or 'sat,sun'")
    out: list[int] = []
    for part in text.lower().replace(" ", "").split(","):
        a, _, b = part.partition("-")
        if a not in DAYS or (b and b not in DAYS):
            raise r.fail(where, "days", f"{part!r}: use mon..sun, ranges like mon-fri")
        i, j = DAYS.index(a), DAYS.index(b or a)
        out.extend(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
    return tuple(sorted(set(out)))


def _minutes(r: _Reader, d: dict[str, Any], where: str, name: str) -> int:
    value = d.get(name)
    m = _HHMM.match(value) if isinstance(value, str) else None
    if m is None:
        raise r.fail(where, name, f"{value!r}: use HH:MM (24:00 for midnight at the end)")
    minutes = int(m.group(1)) * 60 + int(m.group(2))
    if minutes > 24 * 60:
        raise r.fail(where, name, f"{value!r} is past 24:00")
    return minutes


def parse_config(data: Any, path: str = "boards.yaml") -> Config:
    """Validate a loaded YAML document; raise :class:`ConfigError` on the first problem."""
    r = _Reader(path)
    top = r.mapping(data, "top level", "(document)", TOP_FIELDS)
    if top.get("version", 1) != 1:
        raise r.fail(
            "top level", "version", f"{top.get('version')!r}: this gateway reads version 1"
        )
    gw = r.mapping(top.get("gateway"), "gateway", "gateway", GATEWAY_FIELDS)
    gateway_id = r.ident(gw, "gateway", "id")
    timezone = r.text(gw, "gateway", "timezone", "UTC")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise r.fail("gateway", "timezone", f"{timezone!r} is not an IANA time zone") from None
    defaults = r.mapping(top.get("defaults", {}), "defaults", "defaults", tuple(TIMINGS))
    base = {k: r.integer(defaults, "defaults", k, lo, hi, d) for k, (d, lo, hi) in TIMINGS.items()}

    links: dict[str, Link] = {}
    for i, item in enumerate(r.seq(top.get("links", []), "top level", "links")):
        where = f"links[{i}]"
        d = r.mapping(item, where, "links")
        lid = r.ident(d, where, "id")
        where = f"link {lid}"
        r.only(d, where, LINK_FIELDS)
        if lid in links:
            raise r.fail(where, "id", "defined twice")
        links[lid] = Link(lid, r.text(d, where, "port"), r.integer(d, where, "baud", 1200, 921600))

    sites: dict[str, Site] = {}
    for i, item in enumerate(r.seq(top.get("sites"), "top level", "sites")):
        d = r.mapping(item, f"sites[{i}]", "sites")
        sid = r.ident(d, f"sites[{i}]", "id")
        where = f"site {sid}"
        r.only(d, where, SITE_FIELDS)
        if sid in sites:
            raise r.fail(where, "id", "defined twice")
        lead = d.get("security_lead") or {}
        lead = r.mapping(lead, where, "security_lead")
        account = _account(r, d, where)
        sites[sid] = Site(
            sid,
            r.text(d, where, "name"),
            r.text(d, where, "address", ""),
            {str(k): str(v) for k, v in lead.items()},
            account=account.upper() if account else None,
            partition=r.integer(d, where, "partition", 0, 99, 1),
            deputies=_people(r, d.get("deputies", []), where, "deputies"),
            position=_position(r, d, where),
        )
    site = r.ref(gw, "gateway", "site", sites) if "site" in gw else next(iter(sites))
    cameras = _cameras(r, top.get("cameras", []), sites)

    units: dict[str, Unit] = {}
    addrs: dict[int, str] = {}
    zones: dict[tuple[str | None, int], str] = {}  # (site's account, zone) -> unit
    for i, item in enumerate(r.seq(top.get("units"), "top level", "units")):
        d = r.mapping(item, f"units[{i}]", "units")
        uid = r.ident(d, f"units[{i}]", "id")
        where = f"unit {uid}"
        r.only(d, where, UNIT_FIELDS)
        if uid in units:
            raise r.fail(where, "id", "defined twice")
        if "key" in d:
            raise r.fail(where, "key", "keys never live in the register: use the key directory")
        addr = r.integer(d, where, "addr", 1, 65534)
        if addr in addrs:
            raise r.fail(where, "addr", f"{addr} is already unit {addrs[addr]}")
        addrs[addr] = uid
        role = r.text(d, where, "role")
        if role not in ROLES:
            raise r.fail(where, "role", f"{role!r}: one of {', '.join(ROLES)}")
        kind = r.text(d, where, "kind", "panic")
        if kind not in PLAIN_KINDS:
            raise r.fail(where, "kind", f"{kind!r}: one of {', '.join(PLAIN_KINDS)}")
        pins_in = r.mapping(d.get("pins"), where, "pins")
        pins: dict[str, int] = {}
        required = CHECKPOINT_PINS if role == "checkpoint" else PIN_NAMES
        allowed = (*required, *(p for p in OPTIONAL_PINS if p not in required))
        if role == "checkpoint" and "button" in pins_in:
            raise r.fail(
                f"{where} pins",
                "button",
                "a checkpoint has no alarm button: its only button is `checkin`",
            )
        for name in allowed:
            if name in pins_in or name in required:
                pins[name] = r.integer(pins_in, f"{where} pins", name, 0, 39)
        unknown = sorted(set(pins_in) - set(pins), key=str)
        if unknown:
            pin = str(unknown[0])
            raise r.fail(f"{where} pins", pin, unknown_field(pin, allowed))
        problem = esp32_pin_problem(pins)
        if problem is not None:
            raise r.fail(where, "pins", problem)
        timings = {k: r.integer(d, where, k, lo, hi, base[k]) for k, (_, lo, hi) in TIMINGS.items()}
        unit_site = r.ref(d, where, "site", sites)
        zone = r.integer(d, where, "zone", 1, 999) if "zone" in d else None
        if zone is not None:
            key = (sites[unit_site].account, zone)
            if key in zones:
                raise r.fail(
                    where, "zone", f"{zone:03d} is already unit {zones[key]}'s (same account)"
                )
            zones[key] = uid
        units[uid] = Unit(
            id=uid,
            addr=addr,
            site=unit_site,
            place=r.text(d, where, "place"),
            owner=r.text(d, where, "owner"),
            role=role,
            link=r.ref(d, where, "link", links) if links else r.text(d, where, "link", "default"),
            pins=pins,
            kind=kind,
            **timings,
            zone=zone,
            cameras=_unit_cameras(r, d, where, unit_site, cameras),
            position=_position(r, d, where),
        )

    posts: dict[str, Post] = {}
    for i, item in enumerate(r.seq(top.get("posts", []), "top level", "posts")):
        d = r.mapping(item, f"posts[{i}]", "posts")
        pid = r.ident(d, f"posts[{i}]", "id")
        where = f"post {pid}"
        r.only(d, where, POST_FIELDS)
        if pid in posts:
            raise r.fail(where, "id", "defined twice")
        unit_id = r.ref(d, where, "unit", units)
        if units[unit_id].role != "guard_post":
            raise r.fail(
                where, "unit", f"{unit_id!r} has role {units[unit_id].role}, not guard_post"
            )
        shifts = []
        for j, s in enumerate(r.seq(d.get("shifts"), where, "shifts")):
            sw = f"{where} shifts[{j}]"
            s = r.mapping(s, sw, "shifts", SHIFT_FIELDS)
            start, end = _minutes(r, s, sw, "start"), _minutes(r, s, sw, "end")
            if start == end:
                raise r.fail(sw, "end", "a shift of zero length")
            shifts.append(Shift(_days(r, s.get("days"), sw), start, end))
        ladder = []
        for j, s in enumerate(r.seq(d.get("escalation", []), where, "escalation")):
            sw = f"{where} escalation[{j}]"
            s = r.mapping(s, sw, "escalation", STEP_FIELDS)
            step = r.text(s, sw, "step")
            if step not in STEPS:
                raise r.fail(sw, "step", f"{step!r}: one of {', '.join(STEPS)}")
            ladder.append(Step(step, r.integer(s, sw, "after_min", 0, 24 * 60)))
        if [s.after_min for s in ladder] != sorted(s.after_min for s in ladder):
            raise r.fail(where, "escalation", "steps must be in order of after_min")
        posts[pid] = Post(
            id=pid,
            site=r.ref(d, where, "site", sites),
            unit=unit_id,
            checkin_interval_min=r.integer(d, where, "checkin_interval_min", 5, 24 * 60, 60),
            grace_min=r.integer(d, where, "grace_min", 0, 120, 5),
            shifts=tuple(shifts),
            escalation=tuple(ladder),
        )
    arc = _arc(r, top["arc"]) if top.get("arc") is not None else None
    sms = _sms(r, top["sms"]) if top.get("sms") is not None else None
    calendar = _calendar(r, top["calendar"]) if top.get("calendar") is not None else CalendarSpec()
    patrols = _patrols(r, top.get("patrols", []), sites, units)
    return Config(
        path,
        gateway_id,
        site,
        timezone,
        links,
        sites,
        units,
        posts,
        arc,
        calendar,
        patrols,
        cameras=cameras,
        sms=sms,
    )


@dataclass(frozen=True, slots=True)
class SmsSettings:
    """The GSM modem that texts the people on the ladders (gateway/notify/)."""

    port: str
    baud: int = 115200
    retries: int = 3  # failed sends to one person before the next is tried
    retry_s: int = 30  # first wait before a retry (then 2x, 3x ...)
    delivery_timeout_min: int = 10  # no status report by then: the next person
    offline_after_h: int = 2  # a unit offline this long is texted to the site's lead
    faults: tuple[str, ...] = SMS_FAULTS  # which events text a person


def _people(r: _Reader, value: Any, where: str, name: str) -> tuple[dict[str, str], ...]:
    out: list[dict[str, str]] = []
    for j, item in enumerate(r.seq(value, where, name)):
        pw = f"{where} {name}[{j}]"
        d = r.mapping(item, pw, name, PERSON_FIELDS)
        phone = r.text(d, pw, "phone")
        if not _PHONE.match(phone):
            raise r.fail(pw, "phone", f"{phone!r}: digits, optionally +country code, quoted")
        out.append({"name": r.text(d, pw, "name"), "phone": phone})
    return tuple(out)


def _sms(r: _Reader, value: Any) -> SmsSettings:
    d = r.mapping(value, "sms", "sms", SMS_FIELDS)
    faults = r.seq(d.get("faults", list(SMS_FAULTS)), "sms", "faults")
    for f in faults:
        if f not in SMS_FAULTS:
            raise r.fail("sms", "faults", f"{f!r}: any of {', '.join(SMS_FAULTS)}")
    return SmsSettings(
        port=r.text(d, "sms", "port"),
        baud=r.integer(d, "sms", "baud", 1200, 921600, 115200),
        retries=r.integer(d, "sms", "retries", 0, 10, 3),
        retry_s=r.integer(d, "sms", "retry_s", 1, 3600, 30),
        delivery_timeout_min=r.integer(d, "sms", "delivery_timeout_min", 1, 1440, 10),
        offline_after_h=r.integer(d, "sms", "offline_after_h", 1, 168, 2),
        faults=tuple(faults),
    )


CAMERA_FIELDS = ("id", "site", "name", "rtsp", "gb28181", "snapshot", "auth", "credentials")
CAMERA_AUTH = ("digest", "basic", "none")
_GB28181 = re.compile(r"^\d{20}$")


@dataclass(frozen=True, slots=True)
class Camera:
    """A camera that sees a unit's place; its user and password are never here.

    ``credentials`` names the secret ``camera-<credentials>.cred`` in the key directory
    (gateway/video/cameras.py reads it).
    """

    id: str
    site: str
    name: str
    rtsp: str | None = None  # the stream, without credentials
    gb28181: str | None = None  # GB/T 28181 channel id (20 digits) on the video platform
    snapshot: str | None = None  # HTTP(S) URL that answers one JPEG
    auth: str = "digest"  # digest | basic | none
    credentials: str | None = None

    def ref(self) -> dict[str, Any]:
        """What an alarm payload says of it: id, name and stream references, no secret."""
        out: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.rtsp is not None:
            out["rtsp"] = self.rtsp
        if self.gb28181 is not None:
            out["gb28181"] = self.gb28181
        out["snapshot"] = self.snapshot is not None  # published on snapshot/<incident>/<id>
        return out


def _url(r: _Reader, d: dict[str, Any], where: str, name: str, schemes: tuple[str, ...]) -> str:
    value = r.text(d, where, name)
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in schemes or not rest:
        raise r.fail(where, name, f"{value!r}: a URL starting {' or '.join(schemes)}://")
    if "@" in rest.partition("/")[0]:
        raise r.fail(
            where,
            name,
            "credentials never live in the register: name them with `credentials:` and put "
            "user:password in the key directory's camera-<name>.cred",
        )
    return value


def _cameras(r: _Reader, value: Any, sites: dict[str, Site]) -> dict[str, Camera]:
    cameras: dict[str, Camera] = {}
    for i, item in enumerate(r.seq(value, "top level", "cameras")):
        d = r.mapping(item, f"cameras[{i}]", "cameras")
        cid = r.ident(d, f"cameras[{i}]", "id")
        where = f"camera {cid}"
        for secret in ("user", "username", "password"):
            if secret in d:
                raise r.fail(
                    where, secret, "credentials never live in the register: use `credentials:`"
                )
        r.only(d, where, CAMERA_FIELDS)
        if cid in cameras:
            raise r.fail(where, "id", "defined twice")
        gb = d.get("gb28181")
        if isinstance(gb, int) and not isinstance(gb, bool):
            gb = str(gb)
        if gb is not None and (not isinstance(gb, str) or not _GB28181.match(gb)):
            raise r.fail(where, "gb28181", f"{gb!r}: a 20-digit channel id (quote it in YAML)")
        auth = r.text(d, where, "auth", "digest")
        if auth not in CAMERA_AUTH:
            raise r.fail(where, "auth", f"{auth!r}: one of {', '.join(CAMERA_AUTH)}")
        camera = Camera(
            id=cid,
            site=r.ref(d, where, "site", sites),
            name=r.text(d, where, "name"),
            rtsp=_url(r, d, where, "rtsp", ("rtsp", "rtsps")) if "rtsp" in d else None,
            gb28181=gb,
            snapshot=_url(r, d, where, "snapshot", ("http", "https")) if "snapshot" in d else None,
            auth=auth,
            credentials=r.ident(d, where, "credentials") if "credentials" in d else None,
        )
        if camera.rtsp is None and camera.gb28181 is None and camera.snapshot is None:
            raise r.fail(where, "rtsp", "give rtsp, gb28181 or snapshot (or several)")
        if camera.auth != "none" and camera.snapshot is not None and camera.credentials is None:
            raise r.fail(
                where,
                "credentials",
                f"missing for auth {camera.auth}: name the key directory's "
                "camera-<name>.cred (or say auth: none)",
            )
        cameras[cid] = camera
    return cameras


def _unit_cameras(
    r: _Reader, d: dict[str, Any], where: str, site: str, cameras: dict[str, Camera]
) -> tuple[str, ...]:
    out: list[str] = []
    for j, cid in enumerate(r.seq(d.get("cameras", []), where, "cameras")):
        if not isinstance(cid, str) or cid not in cameras:
            known = ", ".join(cameras) or "none defined"
            raise r.fail(where, f"cameras[{j}]", f"{cid!r} is not a camera (known: {known})")
        if cameras[cid].site != site:
            raise r.fail(where, f"cameras[{j}]", f"{cid!r} is at site {cameras[cid].site}")
        if cid in out:
            raise r.fail(where, f"cameras[{j}]", f"{cid!r} listed twice")
        out.append(cid)
    return tuple(out)


def _date(r: _Reader, value: Any, where: str, name: str) -> date:
    if isinstance(value, date):  # YAML reads an unquoted 2026-09-01 as a date
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise r.fail(where, name, f"{value!r}: a day as YYYY-MM-DD") from None


def _spans(r: _Reader, value: Any, where: str, name: str) -> tuple[DateSpan, ...]:
    out: list[DateSpan] = []
    for i, item in enumerate(r.seq(value, where, name)):
        sw = f"{where} {name}[{i}]"
        d = r.mapping(item, sw, name, SPAN_FIELDS)
        start = _date(r, d.get("start"), sw, "start")
        end = _date(r, d.get("end", start), sw, "end")
        if end < start:
            raise r.fail(sw, "end", f"{end} is before the start {start}")
        out.append(DateSpan(start, end, str(d.get("name", ""))))
    return tuple(out)


def _calendar(r: _Reader, value: Any) -> CalendarSpec:
    d = r.mapping(value, "calendar", "calendar", CALENDAR_FIELDS)
    days = _days(r, d.get("school_days", "mon-fri"), "calendar")
    makeup = tuple(
        _date(r, v, "calendar", "makeup_days")
        for v in r.seq(d.get("makeup_days", []), "calendar", "makeup_days")
    )
    for day in makeup:
        if day.weekday() in days:
            raise r.fail(
                "calendar", "makeup_days", f"{day} is a {DAYS[day.weekday()]}: already a school day"
            )
    return CalendarSpec(
        school_days=days,
        terms=_spans(r, d.get("terms", []), "calendar", "terms"),
        holidays=_spans(r, d.get("holidays", []), "calendar", "holidays"),
        makeup_days=makeup,
    )


def _patrols(
    r: _Reader, value: Any, sites: dict[str, Site], units: dict[str, Unit]
) -> dict[str, Patrol]:
    patrols: dict[str, Patrol] = {}
    owner: dict[str, str] = {}  # checkpoint unit -> the route it belongs to
    for i, item in enumerate(r.seq(value, "top level", "patrols")):
        d = r.mapping(item, f"patrols[{i}]", "patrols")
        rid = r.ident(d, f"patrols[{i}]", "id")
        where = f"patrol {rid}"
        r.only(d, where, PATROL_FIELDS)
        if rid in patrols:
            raise r.fail(where, "id", "defined twice")
        site = r.ref(d, where, "site", sites)
        checkpoints: list[str] = []
        for cp in r.seq(d.get("checkpoints"), where, "checkpoints"):
            if not isinstance(cp, str) or cp not in units:
                raise r.fail(where, "checkpoints", f"{cp!r} is not a unit")
            if units[cp].role != "checkpoint":
                raise r.fail(
                    where, "checkpoints", f"{cp!r} is a {units[cp].role}, not a checkpoint"
                )
            if cp in checkpoints:
                raise r.fail(where, "checkpoints", f"{cp!r} is listed twice")
            if cp in owner:
                raise r.fail(where, "checkpoints", f"{cp!r} is already on route {owner[cp]}")
            owner[cp] = rid
            checkpoints.append(cp)
        if not checkpoints:
            raise r.fail(where, "checkpoints", "at least one checkpoint unit")
        order = r.text(d, where, "order", "ordered")
        if order not in PATROL_ORDERS:
            raise r.fail(where, "order", f"{order!r}: one of {', '.join(PATROL_ORDERS)}")
        days = r.text(d, where, "days", "school")
        if days not in PATROL_DAYS:
            raise r.fail(where, "days", f"{days!r}: one of {', '.join(PATROL_DAYS)}")
        max_round = r.integer(d, where, "max_round_min", 1, 24 * 60, 30)
        max_between = r.integer(d, where, "max_between_min", 1, 24 * 60, 15)
        if max_between > max_round:
            raise r.fail(where, "max_between_min", f"{max_between} is longer than max_round_min")
        windows: list[Window] = []
        for j, w in enumerate(r.seq(d.get("windows"), where, "windows")):
            ww = f"{where} windows[{j}]"
            w = r.mapping(w, ww, "windows", WINDOW_FIELDS)
            start, end = _minutes(r, w, ww, "start"), _minutes(r, w, ww, "end")
            if end <= start:
                raise r.fail(ww, "end", "a window ends after it starts, on the same day")
            if windows and start < windows[-1].end_min:
                raise r.fail(ww, "start", "windows in order of the day, not overlapping")
            windows.append(Window(start, end))
        if not windows:
            raise r.fail(where, "windows", "at least one, e.g. {start: '07:00', end: '08:30'}")
        ladder: list[Step] = []
        for j, s in enumerate(r.seq(d.get("escalation", []), where, "escalation")):
            sw = f"{where} escalation[{j}]"
            s = r.mapping(s, sw, "escalation", STEP_FIELDS)
            step = r.text(s, sw, "step")
            if step not in PATROL_STEPS:
                raise r.fail(sw, "step", f"{step!r}: one of {', '.join(PATROL_STEPS)}")
            ladder.append(Step(step, r.integer(s, sw, "after_min", 0, 24 * 60)))
        if [s.after_min for s in ladder] != sorted(s.after_min for s in ladder):
            raise r.fail(where, "escalation", "steps must be in order of after_min")
        leader = r.mapping(d.get("leader") or {}, where, "leader")
        patrols[rid] = Patrol(
            id=rid,
            site=site,
            checkpoints=tuple(checkpoints),
            ordered=order == "ordered",
            school_days_only=days == "school",
            windows=tuple(windows),
            max_round_min=max_round,
            max_between_min=max_between,
            escalation=tuple(ladder),
            leader={str(k): str(v) for k, v in leader.items()},
        )
    return patrols


def _position(r: _Reader, d: dict[str, Any], where: str) -> tuple[float, float] | None:
    value = d.get("position")
    if value is None:
        return None
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(abs(v) <= POSITION_LIMIT_M for v in value)
    )
    if not ok:
        raise r.fail(
            where,
            "position",
            f"{value!r}: [east, north] in metres on the site plan, e.g. [120, -35]",
        )
    return (float(value[0]), float(value[1]))


def _account(r: _Reader, d: dict[str, Any], where: str) -> str | None:
    account = d.get("account")
    if isinstance(account, int) and not isinstance(account, bool):
        account = str(account)  # YAML reads 1234 as a number; 0123 must be quoted
    if account is not None and (not isinstance(account, str) or not _ACCOUNT.match(account)):
        raise r.fail(where, "account", f"{account!r}: 3-16 hex digits (quote it in YAML)")
    return account.upper() if account else None


def _hex_id(r: _Reader, d: dict[str, Any], where: str, name: str) -> str:
    value = d.get(name, "0")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _HEX_ID.match(value):
        raise r.fail(where, name, f"{value!r}: 1-6 hex digits")
    return value.upper()


def _arc(r: _Reader, value: Any) -> Arc:
    d = r.mapping(value, "arc", "arc", ARC_FIELDS)
    aid = r.ident(d, "arc", "id")
    where = f"arc {aid}"
    protocol = r.text(d, where, "protocol", "adm-cid")
    if protocol not in ARC_PROTOCOLS:
        raise r.fail(where, "protocol", f"{protocol!r}: one of {', '.join(ARC_PROTOCOLS)}")
    key_format = r.text(d, where, "key_format", "text")
    if key_format not in KEY_FORMATS:
        raise r.fail(where, "key_format", f"{key_format!r}: one of {', '.join(KEY_FORMATS)}")
    receivers: list[ArcReceiver] = []
    for i, item in enumerate(r.seq(d.get("receivers"), where, "receivers")):
        rw = f"{where} receivers[{i}]"
        rd = r.mapping(item, rw, "receivers", RECEIVER_FIELDS)
        rid = r.ident(rd, rw, "id")
        if any(x.id == rid for x in receivers):
            raise r.fail(rw, "id", f"{rid!r} defined twice")
        receivers.append(
            ArcReceiver(
                rid,
                r.text(rd, rw, "host"),
                r.integer(rd, rw, "port", 1, 65535),
                _hex_id(r, rd, rw, "receiver"),
                _hex_id(r, rd, rw, "line"),
            )
        )
    if not receivers:
        raise r.fail(where, "receivers", "at least one (the primary)")
    return Arc(
        aid,
        tuple(receivers),
        account=_account(r, d, where),
        protocol=protocol,
        key_format=key_format,
        null_interval_s=r.integer(d, where, "null_interval_s", 0, 86400, 60),
        ack_timeout_s=r.integer(d, where, "ack_timeout_s", 1, 120, 10),
        failover_after=r.integer(d, where, "failover_after", 1, 100, 3),
        retry_s=r.integer(d, where, "retry_s", 5, 86400, 60),
    )


def load_config(path: str | Path) -> Config:
    """Read and validate boards.yaml; raise :class:`ConfigError` naming file, entry and field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            str(p), "file", None, "no such file (the register: give --config PATH)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(str(p), "file", None, f"cannot read it: {problem}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), *_yaml_problem(exc, text)) from None
    return parse_config(data, str(p))


def _yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[str, None, str]:
    """(where, None, problem) for a YAML syntax error: its line, and that line's text.

    An unclosed quote or bracket is found only at the end of the file: then the line
    where the unclosed thing began is the one to fix.
    """
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    problem = str(getattr(exc, "problem", None) or exc)
    if "expected <block end>" in problem:
        problem += " (check the indentation)"
    mark = problem_mark
    lines = text.splitlines()
    if context_mark is not None and (
        mark is None or mark.line >= len(lines) or "end of the stream" in problem
    ):
        mark = context_mark
        problem = f"{getattr(exc, 'context', '') or 'here'}, {problem}"
    if mark is None:
        return "file", None, f"YAML syntax: {problem}"
    source = lines[mark.line].strip() if mark.line < len(lines) else ""
    shown = f": {source!r}" if source else ""
    return f"line {mark.line + 1}", None, f"YAML syntax: {problem}{shown}"


def register_topics(config: Config) -> dict[str, dict[str, Any]]:
    """What a gateway publishes of its register, retained: topic leaf -> body.

    ``<site>/register/site`` (the site, its position and guard posts) and one
    ``<site>/register/unit/<id>`` per unit (place, owner, role, kind, position, cameras): duty
    rooms draw their boards and site plans from these and never read a boards.yaml. One
    message per unit keeps each under the clients' inbound payload limit however large
    the school. Keys, pins and links are the gateway's business and stay out.
    """
    out: dict[str, dict[str, Any]] = {}
    sites = {config.site, *(u.site for u in config.units.values())}
    for sid in sorted(sites):
        s = config.sites[sid]
        out[f"{sid}/register/site"] = {
            "gateway": config.gateway_id,
            "site": sid,
            "name": s.name,
            "address": s.address,
            "timezone": config.timezone,
            "position": list(s.position) if s.position else None,
            "security_lead": s.security_lead,
            "posts": [
                {
                    "post": p.id,
                    "unit": p.unit,
                    "place": config.units[p.unit].place,
                    "checkin_interval_min": p.checkin_interval_min,
                    "grace_min": p.grace_min,
                }
                for p in config.posts.values()
                if p.site == sid
            ],
        }
    for u in config.units.values():
        out[f"{u.site}/register/unit/{u.id}"] = {
            "gateway": config.gateway_id,
            "site": u.site,
            "unit": u.id,
            "place": u.place,
            "owner": u.owner,
            "role": u.role,
            "kind": u.kind,
            "zone": u.zone,
            "position": list(u.position) if u.position else None,
            "cameras": [config.cameras[c].ref() for c in u.cameras],
        }
    return out
