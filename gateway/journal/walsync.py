"""The journal's durability: fsync of its WAL file in a worker thread, group commit.

The journal commits with ``synchronous=NORMAL`` (WAL): a COMMIT writes its pages to the
WAL file and returns in tens of microseconds, safe against a process crash but not yet
against a power cut. This module makes commits durable the way ``synchronous=FULL`` does,
by an fsync of the WAL file, but in a worker thread: the event loop goes on (reads the
broker's PUBACK of the alarm it just published, reads the next frames) while the disk
works. Whatever must not be said before the data is on disk (the ACK to a unit: after it,
the unit stops retransmitting) waits in :meth:`WalSync.when_durable`.

Group commit: one fsync covers every commit made before it started; callbacks of commits
made while it ran wait for the next one, which starts as soon as it ends.

A failed fsync is not retried into success: after an fsync error Linux may have dropped
the dirty pages, and a later fsync would report success for data that is gone. The
callbacks waiting for it are dropped (their units are not ACKed and retransmit), and
:attr:`WalSync.failed` stays set: the service's health check restarts the gateway, which
then reads the journal from the disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

log = logging.getLogger(__name__)


class WalSync:
    """fsync of one WAL file off the event loop; callbacks once a commit is on disk."""

    def __init__(self, wal: Path, *, fsync: Callable[[int], None] = os.fsync) -> None:
        """``wal`` is the journal's ``-wal`` file; ``fsync`` is replaceable for tests."""
        self._path = wal
        self.fsync = fsync  # public: a test can hold it to see what waits for the disk
        self._lock = threading.Lock()  # the fd: the worker and sync_now()
        self._fd = -1
        self._ino = -1
        self._pool: ThreadPoolExecutor | None = None
        self._commits = 0  # commits made so far
        self._durable = 0  # commits known to be on disk
        self._running = False
        self._waiting: deque[tuple[int, Callable[[], None]]] = deque()
        self.failed: str | None = None
        self.syncs = 0
        self.sync_s: deque[float] = deque(maxlen=4096)  # recent fsync durations

    def committed(self) -> None:
        """A COMMIT returned: its data is in the WAL file, not yet on disk."""
        self._commits += 1

    @property
    def pending(self) -> int:
        """Commits not yet known to be on disk."""
        return self._commits - self._durable

    def when_durable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the event loop) once every commit so far is on disk.

        At once if they already are. Never, if the fsync fails (see the module's doc).
        """
        if self.failed is not None:
            return
        if self._durable >= self._commits:
            callback()
            return
        self._waiting.append((self._commits, callback))
        self._start()

    def sync_now(self) -> None:
        """Sync the WAL in the caller's thread (start-up, and rare records like epochs)."""
        upto = self._commits
        self._sync()
        self._durable = max(self._durable, upto)

    def close(self) -> None:
        """Stop the worker (waits for an fsync under way) and close the file."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # -- internals ----------------------------------------------------------------------

    def _start(self) -> None:
        if self._running:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="walsync")
        loop = asyncio.get_running_loop()
        self._running = True
        future = self._pool.submit(self._sync)
        future.add_done_callback(
            partial(loop.call_soon_threadsafe, self._done, self._commits)  # type: ignore[arg-type]
        )

    def _sync(self) -> None:
        t0 = time.perf_counter()
        with self._lock:
            ino = os.stat(self._path).st_ino
            if ino != self._ino:  # first use, or the file was replaced: sync the new one
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
                self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
                self._ino = ino
            self.fsync(self._fd)
        self.syncs += 1
        self.sync_s.append(time.perf_counter() - t0)

    def _done(self, upto: int, future: Future[None]) -> None:
        self._running = False
        exc = future.exception()
        if exc is not None:
            self.failed = f"fsync of {self._path} failed: {exc}"
            log.critical(
                "%s: %d ACKs withheld; the journal must be reopened",
                self.failed,
                len(self._waiting),
            )
            self._waiting.clear()
            return
        self._durable = max(self._durable, upto)
        while self._waiting and self._waiting[0][0] <= upto:
            _, callback = self._waiting.popleft()
            try:
                callback()
            except Exception:
                log.exception("a callback waiting for the journal's fsync failed")
        if self._waiting:
            self._start()
