"""What the gateway makes of wire bytes, for a person (``campusguard decode``).

Every frame in the bytes, deframed and decoded as the receiver does, as one plain record:
its type, unit, epoch, sequence and body fields (enums by name), or the reason it was
rejected; then the deframer's rejects by reason with their counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from typing import Any

from protocol import Deframer, ProtocolError, decode


def inspect_frames(data: bytes, key: bytes, *, uplink: bool = True) -> Iterator[dict[str, Any]]:
    """One record per frame in ``data`` (keyed with ``key``), then the deframer's rejects.

    A record with ``reject`` is a frame, or bytes, the gateway refuses.
    """
    deframer = Deframer()
    for raw in deframer.feed(data if data.endswith(b"\x00") else data + b"\x00"):
        try:
            frame = decode(raw, lambda _unit: key, uplink=uplink)
        except ProtocolError as exc:
            yield {"reject": exc.reason.value, "detail": exc.detail}
            continue
        body = {f.name: getattr(frame.body, f.name) for f in fields(frame.body)}  # type: ignore[arg-type]
        body = {
            k: (v.name.lower() if hasattr(v, "name") and v.name else int(v))
            for k, v in body.items()
        }
        yield {
            "type": frame.type.name,
            "unit": frame.unit,
            "epoch": frame.epoch,
            "seq": frame.seq,
            **body,
        }
    for reason, count in deframer.rejects.items():
        yield {"reject": reason.value, "count": count}
