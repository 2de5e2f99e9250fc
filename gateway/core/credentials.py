"""Where the gateway finds its secrets: in a directory of its own, or as systemd credentials.

Every kind of secret has one file name (gateway/README.md, "Secrets", lists them all).
Under systemd, ``LoadCredential=ID:DIR`` hands a directory over as one credential per
file, named ``ID_<file name>`` in ``$CREDENTIALS_DIRECTORY`` (systemd's
exec-credential.c), so ``/etc/campusguard/keys/shop-a.key`` arrives as ``keys_shop-a.key``.
A :class:`SecretDir` knows which of the two layouts it reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

UNIT_KEYS = "keys"
"""The ``LoadCredential`` id of the unit key directory (``/etc/campusguard/keys``)."""


def unit_key_file(unit_id: str) -> str:
    """The file name of a unit's key in its key directory: ``<unit>.key``."""
    return f"{unit_id}.key"


@dataclass(frozen=True, slots=True)
class SecretDir:
    """A directory of secrets; ``prefix`` is ``ID_`` when systemd's credentials hold it."""

    path: Path
    prefix: str = ""

    def file(self, name: str) -> Path:
        """Where the secret that lives as ``name`` in its own directory is found here."""
        return self.path / f"{self.prefix}{name}"

    def unit_key(self, unit_id: str) -> Path:
        """Where the key of ``unit_id`` is found here."""
        return self.file(unit_key_file(unit_id))

    def __str__(self) -> str:
        return f"{self.path}/{self.prefix}*" if self.prefix else str(self.path)


def unit_keydir(given: Path | None, env: Mapping[str, str] | None = None) -> SecretDir:
    """The unit keys: ``given`` (``--keydir``), else systemd's credentials, else ``keys/``."""
    if given is not None:
        return SecretDir(given)
    creds = (os.environ if env is None else env).get("CREDENTIALS_DIRECTORY")
    if creds:
        return SecretDir(Path(creds), f"{UNIT_KEYS}_")
    return SecretDir(Path("keys"))
