"""The gateway assembled: links -> receiver -> pipeline (journal, incidents) -> relay.

:class:`Gateway` builds every layer in its constructor (the store is opened there, so
watchers can be built on ``gateway.outlet`` and ``gateway.journal.store`` before it runs) and
:meth:`Gateway.run` runs them in one TaskGroup until :meth:`Gateway.stop` (SIGTERM or
SIGINT when ``install_signals``). systemd hears READY=1 once links and journal are up
(the broker may still be down: messages wait in the outbox), WATCHDOG=1 while the loop is
responsive and the journal commits, STOPPING=1 on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.arc.wiring import ArcLink, ArcPlan
from gateway.core.broker import BrokerSettings
from gateway.core.clock import Clock, SystemClock
from gateway.core.config import Config, Link, register_topics
from gateway.core.credentials import SecretDir
from gateway.core.errors import GatewayError
from gateway.journal.store import RETENTION_DAYS, Store
from gateway.link.downlink import Downlink
from gateway.link.link import SerialLink
from gateway.link.receiver import Receiver
from gateway.pipeline.pipeline import Pipeline
from gateway.pipeline.ports import Outlet, Watcher
from gateway.relay.acks import AckVerifier
from gateway.relay.relay import Relay
from gateway.security.brokerconfig import ACK_LEAVES
from gateway.security.envelope import Signer, reseal
from gateway.security.signkeys import dutyroom_keys, gateway_kid, read_private
from gateway.service.lifecycle import Lifecycle
from gateway.service.sdnotify import Notifier
from gateway.service.status import STATUS_EVERY_S, STATUS_KEY, LinkCounters, snapshot_json
from gateway.service.watchers import GuardedWatcher
from protocol import Codec, ReplayGuard
from protocol.keys import parse_key

log = logging.getLogger(__name__)

TICK_S = 0.2  # watchers' tick: 5x per real second
CHECKPOINT_S = 1.0  # WAL checkpoint period (in a worker thread)
PRUNE_EVERY_S = 3600.0  # retention pruning: at start, then hourly
PRUNE_PAUSE_S = 0.05  # between two pruning batches: the loop stays free for alarms
WATCHDOG_DEFAULT_S = 10.0  # health check period without systemd's watchdog
WATCHDOG_FAILURES = 3  # consecutive failed health checks before the service gives up
LOOP_LAG_LIMIT_S = 2.0  # a loop that late is not healthy


@dataclass(frozen=True, slots=True)
class Settings:
    """How to run: where things are (config holds what)."""

    db_path: Path
    keydir: Path | SecretDir  # a plain path holds <unit>.key files
    broker: BrokerSettings
    links: Mapping[str, Link] | None = None  # None: boards.yaml's links
    prefix: str = "campusguard"
    clock: Clock = field(default_factory=SystemClock)
    more_brokers: tuple[BrokerSettings, ...] = ()  # further nodes of the cluster, in order
    retention_days: float = RETENTION_DAYS  # frames and delivered outbox rows
    arc: ArcPlan | None = None  # the alarm receiving centre (SIA DC-09), if any
    fsync: Callable[[int], None] = os.fsync  # the journal's (a bench emulates an SD card's)


REGISTER_KEY = "register_topics"
"""Journal meta key: the register topics the gateway published last (to clear removed ones)."""


def status_topic(prefix: str, gateway_id: str) -> str:
    """The gateway's retained ``online``/``offline`` status (its MQTT will)."""
    return f"{prefix}/gateway/{gateway_id}/status"


def load_keys(config: Config, keydir: Path | SecretDir) -> dict[int, bytes]:
    """Every unit's key by address; a missing or broken key is logged and skipped."""
    source = keydir if isinstance(keydir, SecretDir) else SecretDir(keydir)
    keys: dict[int, bytes] = {}
    missing: list[str] = []
    for unit in config.units.values():
        path = source.unit_key(unit.id)
        try:
            keys[unit.addr] = parse_key(path.read_text(), str(path))
        except (OSError, ValueError) as exc:
            missing.append(unit.id)
            log.error(
                "unit %s (addr %d): no usable key (%s): its frames are rejected as unknown_unit",
                unit.id,
                unit.addr,
                exc,
            )
    if missing and len(missing) == len(config.units):
        log.critical("no unit has a key in %s: every frame will be rejected", source)
    return keys


class Gateway:
    """The whole gateway service, in-process."""

    def __init__(
        self,
        config: Config,
        settings: Settings,
        *,
        watchers: Sequence[Watcher] = (),
        notifier: Notifier | None = None,
    ) -> None:
        """Open the journal and build every layer; nothing runs until :meth:`run`."""
        self.config = config
        self.settings = settings
        self.clock = settings.clock
        self.notifier = notifier or Notifier()
        links = dict(settings.links) if settings.links is not None else dict(config.links)
        if not links:
            raise GatewayError("no serial link: define links in boards.yaml or pass --serial")
        self.keys = load_keys(config, settings.keydir)
        # what it publishes is signed with its own key; acks need a duty room's key
        secrets = (
            settings.keydir
            if isinstance(settings.keydir, SecretDir)
            else SecretDir(settings.keydir)
        )
        kid = gateway_kid(config.gateway_id)
        self.signer = Signer(kid, read_private(secrets.file(f"{kid}.pem")))
        dutyrooms = dutyroom_keys(secrets.path)  # also as keys_<file> (systemd)
        if not dutyrooms:
            log.error(
                "no duty-room key (dutyroom-<name>.pub) in %s: no acknowledgement will be accepted",
                settings.keydir,
            )
        self.store = Store(settings.db_path, fsync=settings.fsync)
        self.store.seal = self.signer.seal
        resealed = self.store.reseal_pending(
            lambda row: reseal(self.signer, row.topic, row.payload)
        )
        if resealed:
            log.warning("%d waiting messages signed again with %s", resealed, self.signer.kid)
        self.guard = ReplayGuard()
        for addr, state in self.store.replay_load_all().items():
            self.guard.load(addr, state)
        self.codec = Codec(self.keys, gateway=True)
        self.links: dict[str, SerialLink] = {}
        home = {u.addr: u.link for u in config.units.values()}
        self.downlink = Downlink(self.codec, self.store, self.links, home)
        self.pipeline = Pipeline(
            config,
            self.store,
            self.guard,
            self.downlink,
            self.clock,
            prefix=settings.prefix,
            wake_relay=self._wake_relay,
            acks=AckVerifier(self.store.conn, dutyrooms),
        )
        self.receiver = Receiver(self.codec, self.guard, self.pipeline)
        for lid, link in links.items():
            self.links[lid] = SerialLink(lid, link.port, link.baud, self.receiver)
        sites = sorted({config.site, *(u.site for u in config.units.values())})
        p = settings.prefix
        self.relay = Relay(
            self.store,
            settings.broker,
            self.clock,
            client_id=f"campusguard-{config.gateway_id}",
            subscriptions=[f"{p}/{s}/{leaf}" for s in sites for leaf in ACK_LEAVES],
            status_topic=status_topic(p, config.gateway_id),
            on_message=self.pipeline.on_message,
            signer=self.signer,
            gateway_id=config.gateway_id,
            alert=self.pipeline.on_alert,
            brokers=settings.more_brokers,
        )
        self.store.on_commit = self.relay.submit  # committed messages go out at once
        self.arc = (  # hooks into the journal: every alarm and event also queued for the ARC
            ArcLink(settings.arc, config, self.store, outlet=self.pipeline, now=self.clock.now)
            if settings.arc is not None
            else None
        )
        # its own start, stop and broker outages, so that its downtime is in the report
        self.lifecycle = Lifecycle(
            config,
            self.pipeline,
            self.store.conn,
            self.clock,
            connected=self.relay.connected.is_set,
        )
        self.guards: list[GuardedWatcher] = []
        self.attach([self.lifecycle, *watchers])
        # further tasks of the TaskGroup (snapshots, SMS) and what each prunes by age
        self.services: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self.pruners: list[Callable[[float], int]] = []
        self._publish_register()
        self.ready = asyncio.Event()
        self.started_at = self.clock.now()
        self._stop = asyncio.Event()
        self.healthy = True

    def _publish_register(self) -> None:
        """Queue the register's retained topics; clear those of units no longer in it.

        Every start publishes it again (a new broker has no retained copy); the topics
        of the previous run are kept in the journal so that a removed unit's entry is
        cleared rather than left on the broker for ever.
        """
        p = self.settings.prefix
        now = self.clock.now()
        topics = {f"{p}/{leaf}": body for leaf, body in register_topics(self.config).items()}
        before = json.loads(self.store.meta_get(REGISTER_KEY) or "[]")
        with self.store.transaction():
            for topic, body in topics.items():
                payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
                self.store.enqueue(at=now, topic=topic, payload=payload, retain=True)
            for topic in sorted(set(before) - set(topics)):
                self.store.enqueue(at=now, topic=topic, payload="", retain=True)
            self.store.meta_set(REGISTER_KEY, json.dumps(sorted(topics)))

    @property
    def outlet(self) -> Outlet:
        """What watchers use to raise events and signal units."""
        return self.pipeline

    def attach(self, watchers: Sequence[Watcher]) -> None:
        """Add watchers (before or while running), each behind a :class:`GuardedWatcher`.

        One that keeps raising is then reported and fails the health check.
        """
        for w in watchers:
            guard = GuardedWatcher(w, self.pipeline, self.config.site)
            self.guards.append(guard)
            self.pipeline.watchers.append(guard)

    def attach_service(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        prune: Callable[[float], int] | None = None,
    ) -> None:
        """Run ``run()`` as a task of the gateway (call it before :meth:`run`).

        ``prune(before)`` drops what is older than the retention, as the journal's frames are.
        """
        self.services.append((name, run))
        if prune is not None:
            self.pruners.append(prune)

    def stats(self) -> dict[str, object]:
        """Counters and recent latencies (ms, p50/p99) of each stage, for benches and ops."""

        def pct(values: Sequence[float]) -> dict[str, float] | None:
            if not values:
                return None
            s = sorted(values)
            return {
                "n": len(s),
                "p50_ms": round(s[(len(s) - 1) // 2] * 1000, 3),
                "p99_ms": round(s[round(0.99 * (len(s) - 1))] * 1000, 3),
            }

        return {
            "frames": self.receiver.frames,
            "journalled": self.pipeline.journalled,
            "rejects": dict(self.receiver.rejects()),
            "commits": self.store.commits,
            "published": self.relay.published,
            "batch_frames_to_acks": pct(self.pipeline.batch_s),
            "commit": pct(self.store.commit_s),
            "fsync": pct(self.store.wal.sync_s),
            "publish_to_puback": pct(self.relay.puback_s),
        }

    def stop(self) -> None:
        """Ask :meth:`run` to finish (safe from a signal handler)."""
        self._stop.set()

    async def run(self, *, install_signals: bool = False) -> None:
        """Run until :meth:`stop`; raise if a layer fails for good. Closes the store."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        try:
            self._journal_life(self.lifecycle.start)
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(link.run(), name=f"link-{lid}")
                    for lid, link in self.links.items()
                ]
                tasks.append(tg.create_task(self.relay.run(), name="relay"))
                if self.arc is not None:
                    tasks.append(tg.create_task(self.arc.run(), name="arc"))
                tasks.append(tg.create_task(self._ticker(), name="tick"))
                tasks.extend(tg.create_task(fn(), name=name) for name, fn in self.services)
                tasks.append(tg.create_task(self._checkpointer(), name="checkpoint"))
                tasks.append(tg.create_task(self._pruner(), name="prune"))
                tasks.append(tg.create_task(self._status_writer(), name="status"))
                await self._announce_ready()
                tasks.append(tg.create_task(self._watchdog(), name="watchdog"))
                stopper = tg.create_task(self._stop.wait(), name="stop")
                await stopper
                log.info("stopping")
                self.notifier.stopping()
                self._journal_life(self.lifecycle.stop)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.5):
                        await self.relay.say_offline()
                self.relay.stop()
                for t in tasks:
                    t.cancel()
            try:  # for benches and post-mortems: the last run's stage latencies
                self.store.meta_set("stats", json.dumps(self.stats()))
                self.store.meta_set(STATUS_KEY, self.status_json())
            except sqlite3.Error:
                log.exception("cannot store the run's statistics")
        finally:
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            self.pipeline.close()
            self.store.close()
            self.notifier.close()

    def _journal_life(self, record: Callable[[], None]) -> None:
        """Journal a start or a stop; a journal that cannot take it must not stop either."""
        try:
            record()
        except sqlite3.Error:
            log.exception("cannot journal the gateway's start or stop")

    async def _announce_ready(self) -> None:
        # links get one chance to open; a port that is absent now is retried for ever
        # and reported as link_down, but must not hold back the rest
        opened = [asyncio.ensure_future(link.opened.wait()) for link in self.links.values()]
        _, pending = await asyncio.wait(opened, timeout=1.0)
        for f in pending:
            f.cancel()
        up = sum(1 for link in self.links.values() if link.up)
        status = (
            f"{up}/{len(self.links)} links up, {len(self.keys)}/{len(self.config.units)} keys, "
            f"{self.store.pending_count()} messages waiting"
        )
        self.notifier.ready(status)
        self.ready.set()
        log.info("ready: %s", status)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.pipeline.tick()
            try:
                if self.store.changed_elsewhere():  # e.g. a monthly report queued for MQTT
                    self.relay.reread()
            except sqlite3.Error as exc:
                log.warning("cannot read the journal's data version: %s", exc)

    async def _checkpointer(self) -> None:
        """Keep the WAL short, off the event loop (see :meth:`Store.checkpoint`)."""
        while True:
            await asyncio.sleep(CHECKPOINT_S)
            if not self.store.unchecked:
                continue
            self.store.unchecked = 0
            try:
                await asyncio.to_thread(self.store.checkpoint)
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint failed (retrying): %s", exc)

    def status_json(self) -> str:
        """The snapshot ``campusguard status`` reads (:mod:`gateway.service.status`)."""
        links = {
            lid: LinkCounters(
                up=link.up,
                port=link.port,
                bytes_in=link.bytes_in,
                bytes_out=link.bytes_out,
                frames=self.receiver.link_frames[lid],
                rejects=self.receiver.rejects(lid),
            )
            for lid, link in self.links.items()
        }
        arc = self.arc.transmitter.state() if self.arc is not None else None
        return snapshot_json(
            self.clock.now(), self.started_at, links, self.pipeline.retries, arc=arc
        )

    async def _status_writer(self) -> None:
        while True:
            try:
                self.store.meta_set(STATUS_KEY, self.status_json())
            except sqlite3.Error as exc:
                log.warning("cannot write the status snapshot: %s", exc)
            await asyncio.sleep(STATUS_EVERY_S)

    async def _pruner(self) -> None:
        """Drop frames and delivered outbox rows past the retention, a batch at a time."""
        days = self.settings.retention_days
        while True:
            before = self.clock.now() - days * 86400.0
            gone = 0
            try:
                while (
                    n := self.store.prune(before)
                    + (self.arc.queue.prune(before) if self.arc is not None else 0)
                    + sum(prune(before) for prune in self.pruners)
                ):
                    gone += n
                    await asyncio.sleep(PRUNE_PAUSE_S)  # alarms go first
            except sqlite3.Error as exc:
                log.warning("pruning the journal failed (next try in an hour): %s", exc)
            if gone:
                log.info("journal: pruned %d rows older than %g days", gone, days)
            await asyncio.sleep(PRUNE_EVERY_S)

    async def _watchdog(self) -> None:
        """Feed systemd's watchdog while healthy; after N consecutive failures, give up."""
        period = (self.notifier.watchdog_s or 2 * WATCHDOG_DEFAULT_S) / 2
        failures = 0
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(period)
            lag = time.monotonic() - t0 - period
            problem = None
            if self.store.wal.failed is not None:  # never retried: see gateway/journal/walsync.py
                raise GatewayError(f"journal not durable: {self.store.wal.failed}")
            failing = [g for g in self.guards if g.failing]
            if lag > LOOP_LAG_LIMIT_S:
                problem = f"event loop {lag:.1f}s late"
            elif failing:
                problem = "; ".join(
                    f"watcher {g.name} failing ({g.failures} failures: {g.last_error})"
                    for g in failing
                )
            else:
                try:
                    self.store.probe(self.clock.now())
                except sqlite3.Error as exc:
                    problem = f"journal cannot commit: {exc}"
            if problem is None:
                failures = 0
                self.healthy = True
                self.notifier.watchdog()
                continue
            failures += 1
            self.healthy = False
            log.error("health check failed (%d/%d): %s", failures, WATCHDOG_FAILURES, problem)
            if failures >= WATCHDOG_FAILURES:
                raise GatewayError(f"unhealthy {failures} times in a row: {problem}")

    def _wake_relay(self) -> None:
        self.relay.wake()
