"""Unit keys: 32 random bytes each, stored as 64 hex digits in ``<keydir>/<unit id>.key``."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from protocol.mac import KEY_LEN

# SPEC.md section 4: the golden vectors' key; no deployed unit may carry it
TEST_KEY = bytes(range(KEY_LEN))


def parse_key(text: str, source: str = "key") -> bytes:
    """Return the 32 key bytes from hex text; raise ``ValueError`` naming ``source``."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ValueError(f"{source}: not hex") from None
    if len(key) != KEY_LEN:
        raise ValueError(f"{source}: {len(key)} bytes, need {KEY_LEN}")
    return key


def key_path(keydir: str | os.PathLike[str], unit_id: str) -> Path:
    """Where the key of ``unit_id`` lives."""
    return Path(keydir) / f"{unit_id}.key"


def read_key(keydir: str | os.PathLike[str], unit_id: str) -> bytes:
    """Read one unit's key; raise ``FileNotFoundError`` or ``ValueError`` with the path."""
    path = key_path(keydir, unit_id)
    return parse_key(path.read_text(), str(path))


def write_new_key(keydir: str | os.PathLike[str], unit_id: str) -> Path:
    """Create a fresh random key for ``unit_id`` (mode 0600); refuse to overwrite one."""
    path = key_path(keydir, unit_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(KEY_LEN) + "\n")
    return path
