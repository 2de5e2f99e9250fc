"""A unit's MAC key, made once: ``<keydir>/<unit>.key`` (32 random bytes, hex, 0600).

Replacing one is deliberate (``force``): the gateway refuses the unit's frames until it
is deployed again with the new key.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gateway.core.errors import GatewayError
from protocol.keys import key_path, write_new_key

log = logging.getLogger(__name__)


def new_unit_key(unit_id: str, keydir: str | Path, force: bool = False) -> Path:
    """Write a new random key for ``unit_id``; refuse to replace one unless ``force``."""
    path = key_path(keydir, unit_id)
    if path.exists():
        if not force:
            raise GatewayError(f"{path} exists (use --force to replace it, then re-deploy)")
        path.unlink()
        log.warning("replacing the key of %s: re-deploy the unit", unit_id)
    return write_new_key(keydir, unit_id)
