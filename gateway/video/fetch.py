"""One snapshot from one camera over HTTP: basic or digest auth, a deadline, a size cap.

httpx does the digest handshake (RFC 7616: the 401 challenge, then the answer). The reply
is untrusted input: it is read in chunks and dropped past ``max_bytes``, and it must be a
JPEG (it starts with the SOI marker ``FF D8 FF``). Nothing here raises: every way a
camera can fail is a :class:`Shot` with ``status`` and ``error``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from gateway.core.config import Camera
from gateway.video.cameras import Login

TIMEOUT_S = 2.0
"""A camera that has not answered a whole JPEG by then is given up for this alarm."""
MAX_BYTES = 128 * 1024
"""A snapshot larger than this is not kept (a camera's sub-stream JPEG is 20-60 KB)."""
JPEG_SOI = b"\xff\xd8\xff"


@dataclass(frozen=True, slots=True)
class Shot:
    """What one camera gave; ``jpeg`` only when ``status`` is ok.

    ``status``: ok | timeout | unreachable | http_<code> | too_large | not_jpeg | error.
    """

    camera: str
    status: str
    elapsed_s: float
    jpeg: bytes = b""
    error: str = ""


def auth_for(camera: Camera, login: Login | None) -> httpx.Auth | None:
    """The httpx auth flow for ``camera``."""
    if login is None:
        return None
    if camera.auth == "basic":
        return httpx.BasicAuth(login.user, login.password)
    return httpx.DigestAuth(login.user, login.password)


async def fetch(
    client: httpx.AsyncClient,
    camera: Camera,
    login: Login | None,
    *,
    timeout_s: float = TIMEOUT_S,
    max_bytes: int = MAX_BYTES,
) -> Shot:
    """GET ``camera.snapshot`` within ``timeout_s`` in all (both legs of a digest)."""
    t0 = time.monotonic()

    def shot(status: str, error: str = "", jpeg: bytes = b"") -> Shot:
        return Shot(camera.id, status, time.monotonic() - t0, jpeg, error)

    if camera.snapshot is None:
        return shot("error", "no snapshot URL")
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream(
                "GET", camera.snapshot, auth=auth_for(camera, login), follow_redirects=False
            ) as resp:
                if resp.status_code != 200:
                    return shot(f"http_{resp.status_code}", resp.reason_phrase[:80])
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    return shot("too_large", f"{declared} bytes, limit {max_bytes}")
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        return shot("too_large", f"over {max_bytes} bytes")
    except TimeoutError:
        return shot("timeout", f"no whole answer within {timeout_s:g} s")
    except httpx.TransportError as exc:  # refused, unreachable, reset, TLS, bad HTTP
        return shot("unreachable", f"{type(exc).__name__}: {exc}"[:160])
    except httpx.HTTPError as exc:
        return shot("error", f"{type(exc).__name__}: {exc}"[:160])
    if not body.startswith(JPEG_SOI):
        return shot("not_jpeg", f"{len(body)} bytes, not a JPEG")
    return shot("ok", jpeg=bytes(body))
