"""Registers (boards.yaml) for tests: one pin map, small registers built from parts, and
the shipped register as a document to change.

Every test unit is wired as the shipped register's units are (:data:`PINS`); a guard post
adds its check-in button, a unit on mains its mains sense line. The simulation's fleet
(gateway/sim/fleet.py) writes the same wiring into the registers it makes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "boards.yaml"
"""The register in the repository (its units, sites, posts and time zone)."""

PINS: Mapping[str, int] = {
    "button": 13,
    "tamper": 4,
    "led": 2,
    "buzzer": 15,
    "battery_adc": 34,
    "uart_tx": 17,
    "uart_rx": 16,
}
"""An ESP32 unit's wiring, as in the shipped register."""
GUARD_PINS: Mapping[str, int] = {**PINS, "checkin": 27}
"""A guard post's: the check-in button too."""
MAINS_PINS: Mapping[str, int] = {**PINS, "mains": 26}
"""A unit on mains power: the mains sense line too."""
CHECKPOINT_PINS: Mapping[str, int] = {
    **{k: v for k, v in PINS.items() if k != "button"},
    "checkin": 27,
}
"""A patrol checkpoint: the check-in button and no alarm button."""


def shipped(**top: Any) -> dict[str, Any]:
    """The shipped register as a document, with top-level sections replaced by ``top``."""
    doc = yaml.safe_load(SHIPPED.read_text())
    assert isinstance(doc, dict)
    doc.update(copy.deepcopy(top))
    return doc


def unit(
    uid: str,
    addr: int,
    *,
    site: str,
    link: str,
    role: str | None = None,
    pins: Mapping[str, int] = PINS,
    **fields: Any,
) -> dict[str, Any]:
    """One unit's entry: a guard post if ``uid`` starts with "guard", else a shop (unless
    ``role`` says); place and owner named after it unless ``fields`` give them."""
    return {
        "id": uid,
        "addr": addr,
        "site": site,
        "place": f"Place of {uid}",
        "owner": f"Owner of {uid}",
        "role": role or ("guard_post" if uid.startswith("guard") else "shop"),
        "link": link,
        "pins": dict(pins),
        **fields,
    }


def small(
    *,
    gateway_id: str,
    site: Mapping[str, Any],
    links: Sequence[Mapping[str, Any]],
    units: Sequence[Mapping[str, Any]],
    defaults: Mapping[str, Any] | None = None,
    posts: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A register document with one site (the gateway's), its links and units."""
    doc: dict[str, Any] = {
        "version": 1,
        "gateway": {"id": gateway_id, "site": site["id"]},
        "defaults": dict(defaults or {}),
        "links": [dict(link) for link in links],
        "sites": [dict(site)],
        "units": [dict(u) for u in units],
    }
    if posts is not None:
        doc["posts"] = [dict(p) for p in posts]
    return doc


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as boards.yaml writes them (``links:\n  - ...``),
    so that a test may add an item by editing the text."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def to_yaml(doc: Mapping[str, Any]) -> str:
    """The document as boards.yaml text (keys in their order)."""
    return yaml.dump(dict(doc), Dumper=_Dumper, sort_keys=False)
