"""Frame <-> bytes for one side of the link: checks in the order of SPEC.md section 3."""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from protocol.cobs import cobs_encode
from protocol.crc import crc16
from protocol.errors import ProtocolError, Reason
from protocol.formats import (
    BODY_LEN,
    CRC_LEN,
    HEADER_LEN,
    MAX_FRAME,
    MIN_FRAME,
    SIGNED_COMPILED,
    VERSION,
)
from protocol.mac import MAC_LEN, mac8, mac_ok
from protocol.messages import MESSAGE_CLASSES, Frame, Message, MsgType

KeyLookup = Callable[[int], bytes | None]

_ENUM_FIELDS: dict[MsgType, dict[str, Any]] = {}
_FIELD_NAMES: dict[MsgType, tuple[str, ...]] = {
    t: tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    for t, cls in MESSAGE_CLASSES.items()
}


def _resolve_enum_fields() -> None:
    # dataclass field types are strings under "from __future__ import annotations"
    for t, cls in MESSAGE_CLASSES.items():
        hints = typing.get_type_hints(cls)
        _ENUM_FIELDS[t] = {
            name: hints[name]
            for name in _FIELD_NAMES[t]
            if isinstance(hints[name], type)
            and issubclass(hints[name], (enum.IntEnum, enum.IntFlag))
        }


_resolve_enum_fields()


def _as_lookup(keys: Mapping[int, bytes] | KeyLookup) -> KeyLookup:
    if isinstance(keys, Mapping):
        return keys.get
    return keys


def encode(frame: Frame, key: bytes) -> bytes:
    """Return the frame's bytes (header, body, MAC, CRC), not yet COBS-encoded."""
    t = frame.type
    values: dict[str, Any] = {name: int(getattr(frame.body, name)) for name in _FIELD_NAMES[t]}
    try:
        signed: bytes = SIGNED_COMPILED[t].build(
            dict(
                ver=VERSION,
                type=int(t),
                unit=frame.unit,
                epoch=frame.epoch,
                seq=frame.seq,
                **values,
            )
        )
    except Exception as exc:  # construct raises its own errors for out-of-range fields
        raise ValueError(f"cannot encode {frame!r}: {exc}") from exc
    tagged = signed + mac8(key, signed)
    return tagged + crc16(tagged).to_bytes(CRC_LEN, "big")


def to_wire(raw: bytes) -> bytes:
    """COBS-encode a frame and append the 0x00 delimiter: the bytes to write to the line."""
    return cobs_encode(raw) + b"\x00"


def decode(
    raw: bytes,
    keys: Mapping[int, bytes] | KeyLookup,
    *,
    uplink: bool = True,
) -> Frame:
    """Check and decode one COBS-decoded frame.

    ``uplink=True`` is the gateway's view (accepts unit-to-gateway types only);
    ``uplink=False`` is a unit's view. Raises :class:`ProtocolError` with the reason of the
    first failed check. Replay is not checked here (see :class:`protocol.ReplayGuard`).
    """
    n = len(raw)
    if n > MAX_FRAME:
        raise ProtocolError(Reason.OVERSIZE, f"{n} bytes")
    if n < MIN_FRAME:
        raise ProtocolError(Reason.TRUNCATED, f"{n} bytes")
    if crc16(raw[:-CRC_LEN]) != int.from_bytes(raw[-CRC_LEN:], "big"):
        raise ProtocolError(Reason.CORRUPT, "CRC mismatch")
    if raw[0] != VERSION:
        raise ProtocolError(Reason.VERSION, f"version {raw[0]}")
    try:
        t = MsgType(raw[1])
    except ValueError:
        raise ProtocolError(Reason.UNKNOWN_TYPE, f"type 0x{raw[1]:02x}") from None
    if t.uplink != uplink:
        raise ProtocolError(Reason.UNKNOWN_TYPE, f"type {t.name} from the wrong direction")
    unit = int.from_bytes(raw[2:4], "big")
    if n != HEADER_LEN + BODY_LEN[t] + MAC_LEN + CRC_LEN:
        raise ProtocolError(Reason.MALFORMED, f"{t.name} of {n} bytes", unit)
    if unit in (0, 0xFFFF):
        raise ProtocolError(Reason.MALFORMED, f"reserved unit address {unit}", unit)
    key = _as_lookup(keys)(unit)
    if key is None:
        raise ProtocolError(Reason.UNKNOWN_UNIT, f"unit {unit}", unit)
    end = n - CRC_LEN - MAC_LEN
    if not mac_ok(key, raw[:end], raw[end : end + MAC_LEN]):
        raise ProtocolError(Reason.FORGED, f"bad MAC for unit {unit}", unit)
    c = SIGNED_COMPILED[t].parse(raw[:end])
    values: dict[str, Any] = {name: c[name] for name in _FIELD_NAMES[t]}
    try:
        for name, enum_type in _ENUM_FIELDS[t].items():
            values[name] = enum_type(values[name])
    except ValueError as exc:
        raise ProtocolError(Reason.MALFORMED, str(exc), unit) from None
    body: Message = MESSAGE_CLASSES[t](**values)
    return Frame(unit=unit, epoch=c.epoch, seq=c.seq, body=body)


class Codec:
    """One side's codec: a key lookup and a direction, with encode and decode bound to them."""

    def __init__(self, keys: Mapping[int, bytes] | KeyLookup, *, gateway: bool = True) -> None:
        """``gateway=True`` decodes uplink frames and encodes downlink ones."""
        self._key_for = _as_lookup(keys)
        self._gateway = gateway

    def decode(self, raw: bytes) -> Frame:
        """Decode a frame sent to this side (see :func:`decode`)."""
        return decode(raw, self._key_for, uplink=self._gateway)

    def encode(self, frame: Frame) -> bytes:
        """Encode a frame from this side, signed with its unit's key; bytes ready for the line."""
        if frame.type.uplink == self._gateway:
            raise ValueError(f"{frame.type.name} is not sent from this side")
        key = self._key_for(frame.unit)
        if key is None:
            raise ProtocolError(Reason.UNKNOWN_UNIT, f"unit {frame.unit}", frame.unit)
        return to_wire(encode(frame, key))
