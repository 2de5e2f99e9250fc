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


@pytest.mark.parametrize("module", ["app.py", "checkin.py", "link.py", "startup.py"])
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
