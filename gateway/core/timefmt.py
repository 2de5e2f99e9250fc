"""Times as the gateway writes them on the wire and in the journal: UTC ISO 8601, ms, ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, overload


@overload
def iso(t: float) -> str: ...
@overload
def iso(t: None) -> None: ...
@overload
def iso(t: float | None) -> str | None: ...
def iso(t: float | None) -> str | None:
    """UTC ISO 8601 with milliseconds and a ``Z`` (``None`` stays ``None``)."""
    if t is None:
        return None
    text = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def parse_iso(text: Any) -> float | None:
    """An ISO 8601 time (as :func:`iso` writes it) -> seconds; ``None`` if it is not one."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
