"""The one error type of the protocol package and its fixed set of reasons."""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Why a frame was rejected; SPEC.md section 3 gives the order of the checks."""

    OVERSIZE = "oversize"
    CORRUPT = "corrupt"
    TRUNCATED = "truncated"
    VERSION = "version"
    UNKNOWN_TYPE = "unknown_type"
    MALFORMED = "malformed"
    UNKNOWN_UNIT = "unknown_unit"
    FORGED = "forged"
    REPLAYED = "replayed"


class ProtocolError(ValueError):
    """A frame was rejected; ``reason`` says why, ``unit`` names the claimed sender if known."""

    def __init__(self, reason: Reason, detail: str = "", unit: int | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
        self.unit = unit
