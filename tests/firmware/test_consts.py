"""The firmware's private wire constants (const() is free only when private, so each
module keeps its own copy) agree with protocol/ (the gateway's single source)."""

from __future__ import annotations

import ast
import re

import pytest

from gateway.flashing.unitfiles import FIRMWARE_DIR
from protocol import AckState, AlarmKind, FaultCode, HeartbeatFlags, MsgType, SignalPattern
from protocol.messages import TestKind

CONST = re.compile(r"^_([A-Z][A-Z0-9_]*) = const\((0x[0-9A-Fa-f]+|\d+)\)", re.M)
PREFIXES = {
    "F_": FaultCode,
    "HB_": HeartbeatFlags,
    "KIND_": AlarmKind,
    "SIG_": SignalPattern,
    "ACK_": AckState,
    "TEST_": TestKind,
}
ALIASES = {"PROMPT": "PROMPT_CHECKIN", "POLICE": "POLICE_ACK"}


def _expected(name: str) -> int | None:
    if name in MsgType.__members__:
        return int(MsgType[name])
    for prefix, enum in PREFIXES.items():
        if name.startswith(prefix):
            member = name[len(prefix) :]
            member = ALIASES.get(member, member)
            if member in enum.__members__:
                return int(enum[member])
    return None


@pytest.mark.parametrize("module", ["app.py", "checkin.py", "link.py", "outbox.py", "startup.py"])
def test_private_wire_constants_match_protocol(module: str) -> None:
    checked = 0
    for name, value in CONST.findall((FIRMWARE_DIR / module).read_text()):
        want = _expected(name)
        if want is not None:
            assert int(value, 0) == want, f"{module}: _{name} = {value}, protocol says {want}"
            checked += 1
    assert checked or module != "app.py"


def test_crc_tables_are_crc16_ccitt_false() -> None:
    """proto.py's CRC table, written out as two bytes literals (so that it stays in
    flash), is the CRC-16/CCITT-FALSE table."""
    tree = ast.parse((FIRMWARE_DIR / "proto.py").read_text())
    tables = {
        # `_CRC_HI = const(b"...")`: the literal inside const()
        node.targets[0].id: ast.literal_eval(
            node.value.args[0] if isinstance(node.value, ast.Call) else node.value
        )
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in ("_CRC_HI", "_CRC_LO")
    }
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        c &= 0xFFFF
        assert (tables["_CRC_HI"][i], tables["_CRC_LO"][i]) == (c >> 8, c & 0xFF)


def _const_table(module: str, name: str) -> tuple[tuple[object, ...], ...]:
    tree = ast.parse((FIRMWARE_DIR / module).read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == name
            and isinstance(node.value, ast.Call)
        ):
            table: tuple[tuple[object, ...], ...] = ast.literal_eval(node.value.args[0])
            return table
    raise AssertionError(f"{module}: no {name} = const(...)")


@pytest.mark.parametrize("module", ["app.py", "checkin.py", "startup.py"])
def test_settings_indexes_match_startups_tables(module: str) -> None:
    """unit.json's settings are one array that startup.load() fills in the order of its
    _INTS and _TIMES tables, then link_lost_ms, addr, kind, role, mains; every module
    reads it through its own private _C_<NAME> indexes, which must name that slot."""
    order = [row[0] for row in _const_table("startup.py", "_INTS")]
    order += [row[0] for row in _const_table("startup.py", "_TIMES")]
    order += ["link_lost_ms", "addr", "kind", "role", "mains"]
    slots = {str(name).upper(): i for i, name in enumerate(order)}
    checked = 0
    for name, value in CONST.findall((FIRMWARE_DIR / module).read_text()):
        if name.startswith("C_") and name != "C_N":
            assert name[2:] in slots, f"{module}: _{name} names no setting"
            assert int(value, 0) == slots[name[2:]], (
                f"{module}: _{name} = {value}, startup.load() puts it at {slots[name[2:]]}"
            )
            checked += 1
        elif name == "C_N":
            assert int(value, 0) == len(order), f"{module}: _C_N = {value}, {len(order)} slots"
    assert checked
