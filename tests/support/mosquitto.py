"""A real Mosquitto broker on a free loopback port, for tests, benches and the demo.

    with Mosquitto(tmp_path) as broker:      # started, accepting connections
        url = broker.url                     # mqtt://127.0.0.1:PORT
        broker.stop()                        # broker down (same port kept)
        broker.start()                       # and up again

Started from a config file (no persistence, anonymous on loopback only); ``start`` waits
until the port accepts a TCP connection, ``stop`` until the process has exited.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One broker process; restartable on the same port."""

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        persistent: bool = False,
    ):
        if not os.access(MOSQUITTO, os.X_OK):
            raise RuntimeError(f"mosquitto not found at {MOSQUITTO}: apt-get install mosquitto")
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="mosquitto-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        persistence = (
            f"persistence true\npersistence_location {self.dir}/\n"
            if persistent
            else "persistence false\n"
        )
        self.conf.write_text(
            f"listener {self.port} {self.host}\n"
            # as root Mosquitto would drop to user 'mosquitto', who cannot write here
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "allow_anonymous true\n"
            f"{persistence}"
            "max_inflight_messages 0\n"
            "max_queued_messages 100000\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the process lives."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 5.0) -> None:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            return
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"mosquitto did not listen on {self.port}") from None
                time.sleep(0.005)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL) and wait for it."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """SIGKILL the broker (an abrupt broker loss)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.stop()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
