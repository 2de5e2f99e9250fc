"""An IP camera's snapshot endpoint on loopback: JPEG behind digest or basic auth.

A real HTTP server (http.server in a thread) that speaks RFC 7616 digest (MD5, qop=auth)
as Hikvision's ISAPI and Dahua's snapshot.cgi do, so the gateway's aiohttp client runs its
real handshake. Paths:

- ``/digest.jpg``: the JPEG behind digest auth
- ``/basic.jpg``: the JPEG behind basic auth
- ``/open.jpg``: the JPEG, no auth
- ``/big.jpg``: ``big`` bytes of JPEG (over a size cap)
- ``/html``: a login page instead of a picture
- ``/slow.jpg``: answers only once :attr:`CameraServer.release` is set (a hung camera)

:func:`dead_url` is a loopback port with nothing listening (connection refused).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

REALM = "IP Camera"
USER = "admin"
PASSWORD = "cam-pass-7"


def jpeg(size: int = 30_000, seed: int = 1) -> bytes:
    """A body that starts and ends like a JPEG (SOI, APP0 ... EOI), ``size`` bytes."""
    head = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
    rnd = hashlib.sha256(str(seed).encode()).digest()
    middle = (rnd * (size // len(rnd) + 1))[: size - len(head) - 2]
    return head + middle + b"\xff\xd9"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class CameraServer:
    """The camera; ``requests`` counts GETs by path, ``release`` frees the slow path."""

    def __init__(self, picture: bytes | None = None, big: int = 300_000) -> None:
        self.picture = picture or jpeg()
        self.big = jpeg(big, seed=2)
        self.release = threading.Event()
        self.slow_started = threading.Event()
        self.requests: dict[str, int] = {}
        self.nonces: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path
                server.requests[path] = server.requests.get(path, 0) + 1
                if path == "/digest.jpg":
                    if not server.digest_ok(self.headers.get("Authorization", ""), path):
                        return self.challenge("Digest")
                    return self.send(server.picture)
                if path == "/basic.jpg":
                    want = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                    if self.headers.get("Authorization", "") != f"Basic {want}":
                        return self.challenge("Basic")
                    return self.send(server.picture)
                if path == "/open.jpg":
                    return self.send(server.picture)
                if path == "/big.jpg":
                    return self.send(server.big)
                if path == "/html":
                    return self.send(b"<html>login</html>", "text/html")
                if path == "/slow.jpg":
                    server.slow_started.set()
                    server.release.wait(30)
                    return self.send(server.picture)
                self.send_error(404)

            def challenge(self, scheme: str) -> None:
                if scheme == "Digest":
                    nonce = secrets.token_hex(16)
                    server.nonces.add(nonce)
                    value = f'Digest realm="{REALM}", qop="auth", nonce="{nonce}", algorithm=MD5'
                else:
                    value = f'Basic realm="{REALM}"'
                self.send_response(401)
                self.send_header("WWW-Authenticate", value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def send(self, body: bytes, ctype: str = "image/jpeg") -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the gateway gave up on a hung camera

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def digest_ok(self, header: str, uri: str) -> bool:
        """Check an RFC 7616 answer (MD5, qop=auth) to one of our nonces."""
        if not header.startswith("Digest "):
            return False
        fields: dict[str, str] = {}
        for part in header[7:].split(","):
            k, _, v = part.strip().partition("=")
            fields[k] = v.strip('"')
        if fields.get("nonce") not in self.nonces or fields.get("username") != USER:
            return False
        ha1 = _md5(f"{USER}:{REALM}:{PASSWORD}")
        ha2 = _md5(f"GET:{fields.get('uri', '')}")
        want = _md5(
            f"{ha1}:{fields['nonce']}:{fields.get('nc', '')}:{fields.get('cnonce', '')}"
            f":{fields.get('qop', '')}:{ha2}"
        )
        return fields.get("uri") == uri and fields.get("response") == want

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> CameraServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def dead_url() -> str:
    """A loopback URL where nothing listens."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/snapshot.jpg"


def write_login(keydir: os.PathLike[str] | str, name: str, password: str = PASSWORD) -> None:
    """``camera-<name>.cred`` in the key directory, as an installer writes it."""
    path = os.path.join(keydir, f"camera-{name}.cred")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{USER}:{password}\n")
