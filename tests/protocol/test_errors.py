"""Reject reasons: their names are what the journal, the logs and the counters carry."""

from __future__ import annotations

from protocol import ProtocolError, Reason


def test_every_reason_value_is_pinned() -> None:
    assert [r.value for r in Reason] == [
        "oversize",
        "corrupt",
        "truncated",
        "version",
        "unknown_type",
        "malformed",
        "unknown_unit",
        "forged",
        "replayed",
    ]


def test_error_carries_reason_detail_and_unit() -> None:
    e = ProtocolError(Reason.FORGED, "bad MAC", 257)
    assert (e.reason, e.detail, e.unit) == (Reason.FORGED, "bad MAC", 257)
    assert str(e) == "forged: bad MAC"
    bare = ProtocolError(Reason.CORRUPT)
    assert (str(bare), bare.detail, bare.unit) == ("corrupt", "", None)
    assert isinstance(e, ValueError)
