"""The city register (``city.yaml``): districts, police stations, gateways, keys, calendar.

A boards.yaml describes one gateway; city.yaml describes who is who across the city, for
the cluster (``campusguard cluster-config``: broker accounts and permissions, and which
public keys each client must trust):

    version: 1
    prefix: campusguard
    nodes:                                   # the cluster (cluster/README.md)
      - {name: n1, host: nats1.city.example}
    districts:
      - {id: north, name: North}
    stations:                                # a police station's duty room
      - {id: north-hq, district: north, key: MCowBQYDK2VwAyEA...}
    gateways:                                # one per school (or a few schools)
      - {id: gw-oak, district: north, sites: [oak-school], key: MCowBQYDK2VwAyEA...}
    viewers:                                 # read-only (a city view), every site
      - {id: city-view}
    calendar:                                # school closures (holidays)
      - {from: 2026-12-21, to: 2027-01-06, name: winter holidays}

``key`` is an Ed25519 public key: the base64 body of its ``.pub`` PEM file (what
``campusguard keygen`` writes), so the register says which key signs for whom. Each
station receives every alarm of its district's sites; a viewer sees every site.
Errors are :class:`CityError` (a usage error, exit status 2) naming the entry.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.core.errors import CityError

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """A node of the city's cluster: its name and the host clients and peers reach."""

    name: str
    host: str


@dataclass(frozen=True, slots=True)
class Station:
    """A police station's duty room: its district and signing key."""

    id: str
    district: str
    key: Ed25519PublicKey


@dataclass(frozen=True, slots=True)
class CityGateway:
    """A gateway: its district, the sites it serves, its signing key."""

    id: str
    district: str
    sites: tuple[str, ...]
    key: Ed25519PublicKey


@dataclass(frozen=True, slots=True)
class Closure:
    """Schools closed from ``start`` to ``end`` (both days included)."""

    start: dt.date
    end: dt.date
    name: str


@dataclass(frozen=True)
class City:
    """The whole city register."""

    prefix: str
    nodes: tuple[ClusterNode, ...]
    districts: Mapping[str, str]  # id -> name
    stations: Mapping[str, Station]
    gateways: Mapping[str, CityGateway]
    viewers: tuple[str, ...]
    calendar: tuple[Closure, ...]

    def district_sites(self, district: str) -> list[str]:
        """Every site of a district's gateways, sorted."""
        return sorted(
            {s for g in self.gateways.values() if g.district == district for s in g.sites}
        )

    def stations_of(self, gateway_id: str) -> list[Station]:
        """The stations that receive (and may acknowledge) a gateway's alarms."""
        district = self.gateways[gateway_id].district
        return [s for s in self.stations.values() if s.district == district]

    def closed_on(self, day: dt.date) -> Closure | None:
        """The closure that covers ``day``, if any."""
        return next((c for c in self.calendar if c.start <= day <= c.end), None)


def _entries(doc: Mapping[str, Any], key: str, required: bool = True) -> list[Mapping[str, Any]]:
    items = doc.get(key)
    if items is None and not required:
        return []
    if not isinstance(items, list) or (required and not items):
        raise CityError(f"{key}: a list of at least one entry is needed")
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise CityError(f"{key}[{i}]: a mapping is needed, not {item!r}")
    return items


def _id(entry: Mapping[str, Any], where: str, field: str = "id") -> str:
    value = entry.get(field)
    if not isinstance(value, str) or not _ID.match(value):
        raise CityError(f"{where}: {field} {value!r}: lower-case letters, digits and '-' only")
    return value


def _key(entry: Mapping[str, Any], where: str) -> Ed25519PublicKey:
    text = entry.get("key")
    if not isinstance(text, str):
        raise CityError(f"{where}: key: the base64 body of its Ed25519 .pub file is needed")
    try:
        key = serialization.load_der_public_key(
            base64.b64decode("".join(text.split()), validate=True)
        )
    except (binascii.Error, ValueError) as exc:
        raise CityError(f"{where}: key: not a public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CityError(f"{where}: key: not an Ed25519 key")
    return key


def _date(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise CityError(f"{where}: {value!r} is not a date (YYYY-MM-DD)") from None


def _unique(kind: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise CityError(f"{kind}: {i!r} appears twice")
        seen.add(i)


def parse_city(doc: Any) -> City:
    """A City from a parsed YAML document; :class:`CityError` names what is wrong."""
    if not isinstance(doc, Mapping):
        raise CityError("city.yaml: a mapping with districts, stations and gateways is needed")
    if doc.get("version") != 1:
        raise CityError(f"version: {doc.get('version')!r}: only version 1 is known")
    known = {
        "version",
        "prefix",
        "nodes",
        "districts",
        "stations",
        "gateways",
        "viewers",
        "calendar",
    }
    unknown = sorted(set(doc) - known)
    if unknown:
        raise CityError(
            f"unknown field(s) {', '.join(map(str, unknown))}: known are {', '.join(sorted(known))}"
        )
    prefix = doc.get("prefix", "campusguard")
    if not isinstance(prefix, str) or not prefix or "/" in prefix or "#" in prefix or "+" in prefix:
        raise CityError(f"prefix: {prefix!r}: one MQTT topic level")
    nodes = []
    for i, n in enumerate(_entries(doc, "nodes", required=False)):
        host = n.get("host")
        if not isinstance(host, str) or not host:
            raise CityError(f"nodes[{i}]: host is needed")
        nodes.append(ClusterNode(_id(n, f"nodes[{i}]", "name"), host))
    _unique("nodes", [n.name for n in nodes])
    districts: dict[str, str] = {}
    for i, d in enumerate(_entries(doc, "districts")):
        did = _id(d, f"districts[{i}]")
        if did in districts:
            raise CityError(f"districts: {did!r} appears twice")
        districts[did] = str(d.get("name", did))

    def district(entry: Mapping[str, Any], where: str) -> str:
        value = entry.get("district")
        if value not in districts:
            raise CityError(f"{where}: district {value!r}: not one of {', '.join(districts)}")
        return str(value)

    stations = {}
    for i, s in enumerate(_entries(doc, "stations")):
        where = f"stations[{i}]"
        sid = _id(s, where)
        if sid in stations:
            raise CityError(f"stations: {sid!r} appears twice")
        stations[sid] = Station(sid, district(s, where), _key(s, where))
    gateways = {}
    site_owner: dict[str, str] = {}
    for i, g in enumerate(_entries(doc, "gateways")):
        where = f"gateways[{i}]"
        gid = _id(g, where)
        if gid in gateways:
            raise CityError(f"gateways: {gid!r} appears twice")
        sites = g.get("sites")
        if not isinstance(sites, list) or not sites:
            raise CityError(f"{where}: sites: a list of at least one site is needed")
        for s in sites:
            site = _id({"site": s}, where, "site")
            if site in site_owner:
                raise CityError(f"{where}: site {site!r} is already gateway {site_owner[site]}'s")
            site_owner[site] = gid
        gateways[gid] = CityGateway(gid, district(g, where), tuple(sites), _key(g, where))
    for did in districts:
        if not any(s.district == did for s in stations.values()):
            raise CityError(f"district {did!r} has no station: nobody would receive its alarms")
    viewers = tuple(_id(v, f"viewers[{i}]") for i, v in enumerate(_entries(doc, "viewers", False)))
    _unique("viewers", list(viewers))
    calendar = []
    for i, c in enumerate(_entries(doc, "calendar", required=False)):
        where = f"calendar[{i}]"
        start, end = _date(c.get("from"), where), _date(c.get("to", c.get("from")), where)
        if end < start:
            raise CityError(f"{where}: to {end} is before from {start}")
        calendar.append(Closure(start, end, str(c.get("name", ""))))
    return City(
        prefix=prefix,
        nodes=tuple(nodes),
        districts=districts,
        stations=stations,
        gateways=gateways,
        viewers=viewers,
        calendar=tuple(calendar),
    )


def load_city(path: str | os.PathLike[str]) -> City:
    """Read and check ``city.yaml``; :class:`CityError` (one line) if it cannot be used."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise CityError(f"{p}: {os.strerror(exc.errno or 0) or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise CityError(f"{p}:{line} not valid YAML") from None
    try:
        return parse_city(doc)
    except CityError as exc:
        raise CityError(f"{p}: {exc}") from None
