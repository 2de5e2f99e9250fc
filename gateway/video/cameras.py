"""A camera's user and password, from the key directory (never from boards.yaml).

``credentials: NAME`` in a camera's entry names the file ``camera-NAME.cred`` in the key
directory (as systemd credentials: ``keys_camera-NAME.cred``), one line ``user:password``.
Several cameras on one recorder may share one file.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.config import Camera
from gateway.core.credentials import SecretDir
from gateway.core.errors import CameraCredentialError


@dataclass(frozen=True, slots=True)
class Login:
    """What a camera asks for; ``repr`` never shows the password."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"Login(user={self.user!r}, password=***)"


def credential_file(name: str) -> str:
    """The file name of a camera credential in the key directory."""
    return f"camera-{name}.cred"


def read_login(secrets: SecretDir, camera: Camera) -> Login | None:
    """The login of ``camera`` (None for ``auth: none``); :class:`CameraCredentialError`."""
    if camera.auth == "none" or camera.credentials is None:
        return None
    path = secrets.file(credential_file(camera.credentials))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CameraCredentialError(
            f"camera {camera.id}: cannot read {path} ({type(exc).__name__}): put "
            "user:password in it"
        ) from None
    user, sep, password = text.splitlines()[0].partition(":") if text.strip() else ("", "", "")
    if not sep or not user:
        raise CameraCredentialError(f"camera {camera.id}: {path} must hold one line user:password")
    return Login(user, password)
