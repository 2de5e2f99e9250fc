"""A private MQTT broker for the demo, the bench and the HIL tests: Mosquitto on loopback.

    with LocalBroker() as broker:          # started, accepting connections
        url = broker.url                   # mqtt://127.0.0.1:PORT
        broker.stop(); broker.start()      # an outage, same port

Mosquitto (Debian's ``mosquitto`` package, which ``make demo`` installs) is the broker the
police run, so the demo and the tests speak to the real thing; it starts from a config
file in ~25 ms, on 127.0.0.1 and a free port. It runs locked down as shipped
(:mod:`gateway.security.brokerconfig`: TLS with a private CA, passwords, client certificates, the
ACL for ``accounts``, no anonymous clients); :meth:`LocalBroker.settings` gives a user's
way in. ``open_listener`` (plain TCP, anyone may do anything) exists for the one test
that shows what an open broker allows. With ``persistent=True`` sessions and queued QoS 1
messages survive a stop/start (a persistent subscriber misses nothing while the broker
was down).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from gateway.core.broker import BrokerSettings
from gateway.core.errors import BrokerMissingError, BrokerStartError
from gateway.security.brokerconfig import Accounts, BrokerFiles, write_broker_config

log = logging.getLogger(__name__)

INSTALL_HINT = "sudo apt-get install mosquitto (or give a broker with --broker URL)"


def find_mosquitto() -> str:
    """Path of the ``mosquitto`` executable; :class:`BrokerMissingError` names the fix."""
    for candidate in (
        shutil.which("mosquitto"),
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerMissingError(f"mosquitto is not installed: {INSTALL_HINT}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalBroker:
    """One Mosquitto process on a loopback port; restartable on the same port."""

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        persistent: bool = False,
        exe: str | None = None,
        accounts: Accounts | None = None,
        open_listener: str | None = None,
        ca_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        """Write the config (``workdir`` default: a temporary folder, removed at exit).

        ``accounts``: who may connect and do what (required unless ``open_listener``);
        ``open_listener``: the listener's access lines for a broker without accounts, which
        only a test or a bench may write (tests/support/mosquitto.py: never shipped);
        ``ca_dir``: where the CA is kept (default ``workdir``; tests share one).
        """
        if accounts is None and open_listener is None:
            raise ValueError("a LocalBroker needs accounts")
        self.exe = exe or find_mosquitto()
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="mqtt-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.conf = self.dir / "mosquitto.conf"
        self.log_file = self.dir / "mosquitto.log"
        persistence = (
            f"persistence true\npersistence_location {self.dir}/\nautosave_interval 1\n"
            if persistent
            else "persistence false\n"
        )
        common = (
            # as root Mosquitto would drop to user 'mosquitto', who cannot write here
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            f"{persistence}"
            "max_inflight_messages 0\n"
            "max_queued_messages 100000\n"
            f"log_dest file {self.log_file}\n"
            "log_type error\nlog_type warning\n"
        )
        self.files: BrokerFiles | None = None
        if accounts is None:
            self.conf.write_text(f"listener {self.port} {self.host}\n{open_listener}\n{common}")
        else:
            self.files = write_broker_config(
                self.dir,
                accounts,
                port=self.port,
                bind=self.host,
                hosts=(self.host, "localhost"),
                ca_dir=ca_dir,
                extra=common,
            )
        self._proc: subprocess.Popen[bytes] | None = None

    def settings(self, user: str | None = None) -> BrokerSettings:
        """How ``user`` (e.g. ``gateway-<id>``, ``dutyroom-<name>``) reaches this broker."""
        if self.files is None:
            return BrokerSettings(self.host, self.port)
        if user is None:
            raise ValueError("this broker takes no anonymous clients: name a user")
        cert = self.files.client(user)
        return BrokerSettings(
            self.host,
            self.port,
            tls=True,
            username=user,
            password=self.files.password(user),
            ca_file=str(self.files.ca.cert),
            client_cert=str(cert.cert),
            client_key=str(cert.key),
        )

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``, or ``mqtts://`` when locked down (see :meth:`settings`)."""
        return f"{'mqtt' if self.files is None else 'mqtts'}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the broker process lives."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 5.0) -> None:
        """Start the broker and wait until it accepts TCP connections."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:  # polling a condition (the port listens) with a deadline
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                code = self._proc.returncode
                self._proc = None
                raise BrokerStartError(f"mosquitto exited with {code}: {err.strip()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    log.info("mosquitto listening on %s (pid %d)", self.url, self._proc.pid)
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerStartError(f"mosquitto did not listen on {self.port}") from None
                time.sleep(0.005)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
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
        """SIGKILL the broker: an abrupt loss (a persistent broker loses what it had not saved)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.stop()

    def close(self) -> None:
        """Stop, and remove the folder if this broker made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        """Start the broker."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop it (never swallows the exception)."""
        self.close()
