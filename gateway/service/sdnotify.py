"""systemd's notify protocol: READY=1, WATCHDOG=1, STOPPING=1, STATUS= on $NOTIFY_SOCKET.

A few lines on a datagram socket (sd_notify(3)); without NOTIFY_SOCKET every call is a
no-op, so the gateway runs the same under systemd, in tests and by hand.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends state lines to systemd, if it is listening."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from ``env`` (os.environ)."""
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr: str | None = None
        if addr.startswith("@"):
            self._addr = "\0" + addr[1:]  # abstract namespace
        elif addr.startswith("/"):
            self._addr = addr
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._sock: socket.socket | None = None
        self.sent: list[str] = []

    @property
    def enabled(self) -> bool:
        """True when systemd listens."""
        return self._addr is not None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False if it could not be sent."""
        if self._addr is None:
            return False
        text = "\n".join(lines)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(text.encode(), self._addr)
        except OSError as exc:
            log.warning("sd_notify %r failed: %s", text, exc)
            return False
        self.sent.append(text)
        return True

    def ready(self, status: str = "") -> bool:
        """READY=1 (and a status line)."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        """WATCHDOG=1: the service is healthy."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """STOPPING=1."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """STATUS=text (shown by systemctl status)."""
        return self.notify(f"STATUS={text}")

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
