# Frames that must reach the gateway, sent again until it ACKs them.
#
# A frame is kept as its exact wire bytes: a retransmission is the same bytes, the same
# counter and the same MAC (SPEC.md 1.3). Alarm-class frames (ALARM, CANCEL, CHECKIN) are
# written to flash BEFORE their first transmission and reloaded after a reboot, so a
# pending alarm survives power loss and is never re-signed. Retries: first after
# ~200 ms, then doubling with +-25 % jitter, capped at 30 s, for ever. Listen before
# talk: while the link is busy (another unit sending) a frame waits 2-9 ms, at most 10
# times in a row (a line that never falls quiet must not hold an alarm back).
import asyncio
import random
import time
from array import array
from asyncio import core  # type: ignore[attr-defined]  # MicroPython's asyncio internals
from micropython import const

from link import wake

_SLOTS = const(16)
_W = const(28)  # bytes per slot: the longest retried frame (ALARM, CANCEL) is 28 on the wire
_RECENT = const(16)
_FILE = "outbox.bin"
_LBT_TRIES = const(10)
_TICK_MS = const(20)  # at least this between two passes (a listen-before-talk hold)
_IDLE_MS = const(3600000)  # nothing pending: sleep until add() wakes the task

# priorities: what is dropped first when every slot is full
_PRIO_KEEP = const(0)  # opening ALARM, duress ALARM, CANCEL, duress CHECKIN
_PRIO_FOLD = const(1)  # a further press of an open series (a later one supersedes it)
_PRIO_INFO = const(2)  # FAULT, TEST: RAM only
_FREE = const(255)


class Outbox:
    """Up to 16 pending frames in parallel arrays (a few hundred bytes, no per-frame
    objects). When every slot is taken, the oldest FAULT/TEST, then the oldest further
    press goes; only if 16 never-drop frames are pending is the oldest of those replaced
    (counted in `dropped`). Priorities: 0 keep, 1 fold (further press), 2 info."""

    def __init__(self, link, store, retry_first_ms=200, retry_cap_ms=30000):
        self._link = link
        self._store = store
        self._first_ms = retry_first_ms
        self._cap_ms = retry_cap_ms
        self.buf = bytearray(_SLOTS * _W)  # slot i at i * 28 (sent with write(buf, off, n))
        self._n = bytearray(_SLOTS)
        self._type = bytearray(_SLOTS)
        self._prio = bytearray(b"\xff" * _SLOTS)  # _FREE marks an empty slot
        self._persist = bytearray(_SLOTS)
        self._attempts = bytearray(_SLOTS)
        self._waits = bytearray(_SLOTS)  # listen-before-talk deferrals in a row
        self._epoch = array("I", bytes(4 * _SLOTS))
        self._seq = array("H", bytes(2 * _SLOTS))
        self._due = array("i", bytes(4 * _SLOTS))
        self._added = array("i", bytes(4 * _SLOTS))
        # counters recently sent (pending or not): an ACK is taken only for these
        self._r_epoch = array("I", bytes(4 * _RECENT))
        self._r_seq = array("H", bytes(2 * _RECENT))
        self._r_type = bytearray(_RECENT)
        self._r_next = 0
        self.dropped = 0
        self._task = None  # the run task while it sleeps (add() wakes it)

    # ---- adding and sending ----

    def free_slot(self):
        """A free slot, else the oldest FAULT/TEST, else the oldest further press, else
        the oldest never-drop frame (counted in `dropped`)."""
        for i in range(_SLOTS):
            if self._prio[i] == _FREE:
                return i
        for prio in (_PRIO_INFO, _PRIO_FOLD, _PRIO_KEEP):
            best = -1
            for i in range(_SLOTS):
                if self._prio[i] == prio and (
                    best < 0 or time.ticks_diff(self._added[i], self._added[best]) < 0
                ):
                    best = i
            if best >= 0:
                self.dropped += 1
                return best
        return 0

    def remember(self, mtype, epoch, seq):
        """Note a sent counter so that its ACK will be taken."""
        i = self._r_next
        self._r_epoch[i] = epoch
        self._r_seq[i] = seq
        self._r_type[i] = mtype
        self._r_next = (i + 1) % _RECENT

    def recent_type(self, epoch, seq):
        """The type of a recently sent frame with this counter, or 0."""
        for i in range(_RECENT):
            if self._r_type[i] and self._r_epoch[i] == epoch and self._r_seq[i] == seq:
                return self._r_type[i]
        return 0

    def put(self, i, mtype, epoch, seq, n, prio, persist, now):
        self._n[i] = n
        self._type[i] = mtype
        self._epoch[i] = epoch
        self._seq[i] = seq
        self._prio[i] = prio
        self._persist[i] = 1 if persist else 0
        self._attempts[i] = 0
        self._waits[i] = 0
        self._added[i] = now
        self._due[i] = now

    def add(self, mtype, epoch, seq, wire, n, prio, persist):
        """Queue the frame wire[0:n], store it if `persist`, then send it at once.

        Returns False if it could not be stored (it is still queued and sent: an alarm
        goes out even when the flash fails, it just would not survive a reboot).
        """
        i = self.free_slot()
        buf = self.buf
        o = i * _W
        for k in range(n):
            buf[o + k] = wire[k]
        now = time.ticks_ms()
        self.put(i, mtype, epoch, seq, n, prio, persist, now)
        ok = True
        if persist:
            ok = self._save()
        self._send(i, now)
        t = self._task
        if t is not None:  # it sleeps until an older deadline (or for good): recompute
            self._task = None
            wake(t)
        return ok

    def _send(self, i, now):
        if self._link.busy() and self._waits[i] < _LBT_TRIES:
            # listen before talk: somebody else is on the line; try again in 2-9 ms
            self._waits[i] += 1
            self._due[i] = time.ticks_add(now, 2 + random.getrandbits(3))
            return
        self._waits[i] = 0
        self._link.send(self.buf, self._n[i], i * _W)
        self.remember(self._type[i], self._epoch[i], self._seq[i])
        a = self._attempts[i]
        if a < 255:
            a += 1
            self._attempts[i] = a
        ms = self._first_ms
        for _ in range(a - 1):
            ms <<= 1
            if ms >= self._cap_ms:
                ms = self._cap_ms
                break
        # +-25 % jitter, so units that lost the link together do not retry together
        ms = ms - (ms >> 2) + (random.getrandbits(10) * (ms >> 1) >> 10)
        self._due[i] = time.ticks_add(now, ms)

    # ---- acknowledgement ----

    def ack(self, epoch, seq):
        """Remove the pending frame with this counter; returns its type or 0."""
        for i in range(_SLOTS):
            if self._prio[i] != _FREE and self._epoch[i] == epoch and self._seq[i] == seq:
                self._prio[i] = _FREE
                if self._persist[i]:
                    self._save()
                return self._type[i]
        return 0

    def pending(self, mtype=0):
        """Number of pending frames (of one type, if given)."""
        n = 0
        for i in range(_SLOTS):
            if self._prio[i] != _FREE and (mtype == 0 or self._type[i] == mtype):
                n += 1
        return n

    # ---- persistence ----

    def _save(self):
        """Write every pending alarm-class frame to flash (startup.py reloads them)."""
        out = bytearray()
        for i in range(_SLOTS):
            if self._prio[i] != _FREE and self._persist[i]:
                n = self._n[i]
                out.append(n)
                out.append(self._prio[i])
                out.extend(self.buf[i * _W : i * _W + n])
        if not out:
            self._store.remove(_FILE)
            return True
        return self._store.write(_FILE, out)

    # ---- the retransmission task ----

    def kick(self):
        """Send every pending frame that is due now, never-drop frames first. Returns
        the ms until the next one is due, -1 if nothing is pending."""
        now = time.ticks_ms()
        for prio in (_PRIO_KEEP, _PRIO_FOLD, _PRIO_INFO):
            for i in range(_SLOTS):
                if self._prio[i] == prio and time.ticks_diff(self._due[i], now) <= 0:
                    self._send(i, now)
        wait = -1
        for i in range(_SLOTS):
            if self._prio[i] != _FREE:
                d = time.ticks_diff(self._due[i], now)
                if wait < 0 or d < wait:
                    wait = d
        return wait

    async def run(self):
        """The layer's task (App starts it, watches it and cancels it). Sleeps until the
        next retry is due (at least one tick: a held-back frame waits ~20 ms, as it
        always has), or, with nothing pending, until add() wakes it."""
        while True:
            wait = self.kick()
            self._task = core.cur_task
            try:
                await asyncio.sleep_ms(_IDLE_MS if wait < 0 else max(wait, _TICK_MS))
            finally:
                self._task = None
