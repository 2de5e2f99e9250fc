# Frames that must reach the gateway, sent again until it ACKs them.
#
# A frame is kept as its exact wire bytes: a retransmission is the same bytes, the same
# counter and the same MAC (SPEC.md 1.3). Alarm-class frames (ALARM, CANCEL, CHECKIN) are
# written to flash BEFORE their first transmission and reloaded after a reboot, so a
# pending alarm survives power loss and is never re-signed. Listen before talk: while the
# link is busy (another unit sending) a frame waits 2-9 ms, at most 10 times in a row (a
# line that never falls quiet must not hold an alarm back).
#
# Retransmission timeout: learnt from the ACK round trip as TCP does (RFC 6298: smoothed
# RTT and its mean deviation; Karn: only a frame sent once is timed, since an ACK after a
# retransmission may answer either copy), but as smoothed RTT plus two deviations, never
# below the largest recent round trip: this link's round trips are bounded (the frame
# and its ACK on the wire, the gateway's journal fsync, 1-20 ms on a Pi's SD card, and
# both loops), and RFC 6298's four deviations came to twice the round trip, which put
# the third copy of an alarm lost twice past 100 ms. Frames sent once and ACKed
# (heartbeats, alarms) are the samples, and a frame sent twice whose copy was needless:
# the gateway ACKs both copies, so a second ACK shows that the first had arrived (RFC
# 3708), and the first ACK timed it; the timeout then covers that round trip at once.
# Before the first sample, and at most, retry_first_ms (200, the fixed timer this
# replaced); never below the frame and its ACK on the wire at the link's baud rate. The
# first two retries wait the timeout; each further one twice the last, capped at
# retry_cap_ms (30 s), for ever. Jitter only lengthens (an early copy is a needless
# one): up to an eighth more plus two frame air times, so units that lost the line
# together (a collision on a shared bus) spread out.
import random
import struct
import time
from array import array
from micropython import const

import proto
from sleeper import Sleeper

_SLOTS = const(16)
_W = const(28)  # bytes per slot: the longest retried frame (ALARM, CANCEL) is 28 on the wire
_RECENT = const(16)
_FILE = const("outbox.bin")
_LBT_TRIES = const(10)
_TICK_MS = const(2)  # at least this between two passes (ticks_ms's resolution: no spin)
_BITS_PER_BYTE = const(10)  # 8N1
_ACK_WIRE = const(29)  # an ACK on the wire: 27 bytes, COBS's byte and the delimiter
_RTO_MIN_MS = const(2)  # ticks_ms's resolution, on both ends of a round trip

# priorities: what is dropped first when every slot is full
_PRIO_KEEP = const(0)  # opening ALARM, duress ALARM, CANCEL, duress CHECKIN
_PRIO_FOLD = const(1)  # a further press of an open series (a later one supersedes it)
_PRIO_INFO = const(2)  # FAULT, TEST: RAM only
_FREE = const(255)
_ACK_POLICE = const(2)  # ACK state (SPEC.md 2.7)

# what a (further) ACK of a recently sent counter tells
_R_NONE = const(0)
_R_TIMED = const(1)  # sent once, unreliably (a heartbeat): its ACK is a round trip
_R_TWICE = const(2)  # sent twice and ACKed once: a second ACK shows the copy needless


# Per-slot fields live in four arrays, not one array per field: each array costs two
# heap objects (the array and its items, 32-byte GC blocks on the unix port) and an
# attribute; thirteen arrays took ~1 KB more. Slots are 0..15; the ring of counters
# recently sent (pending or not) follows them at 16..31 in the counter arrays.
# Offsets into _m (a bytearray): one row of 16 per field.
_M_N = const(0)  # wire length
_M_TYPE = const(16)
_M_PRIO = const(32)  # _FREE marks an empty slot
_M_PERSIST = const(48)
_M_ATTEMPTS = const(64)
_M_WAITS = const(80)  # listen-before-talk deferrals in a row
_M_RTYPE = const(96)  # type of recently sent counter k (0: none yet)
_M_RTIMED = const(112)  # what an ACK of recent counter k tells (_R_*)
_M_LEN = const(128)
# _t: due at i, added at 16 + i, last sent at 32 + i; recent k sent at 48 + k (_R_TIMED)
# or the round trip of its first copy (_R_TWICE)
_ADDED = const(16)
_SENT = const(32)
_RSENT = const(48)


class Outbox:
    """Up to 16 pending frames in parallel arrays (a few hundred bytes, no per-frame
    objects). When every slot is taken, the oldest FAULT/TEST, then the oldest further
    press goes; only if 16 never-drop frames are pending is the oldest of those replaced
    (counted in `dropped`). Priorities: 0 keep, 1 fold (further press), 2 info."""

    def __init__(self, link, store, retry_first_ms=200, retry_cap_ms=30000, baud=115200):
        self.link = link
        self._store = store
        self._cap_ms = retry_cap_ms
        if baud <= 0:
            baud = 115200
        # one frame's air time (the jitter's step), and the floor: a frame and its ACK
        self._air_ms = (_W * _BITS_PER_BYTE * 1000 + baud - 1) // baud
        self._floor_ms = (
            (_W + _ACK_WIRE) * _BITS_PER_BYTE * 1000 + baud - 1
        ) // baud + _RTO_MIN_MS
        # never slower than the fixed first retry was: a slow spell (a boot storm on the
        # bus, a gateway busy for seconds) measured once would otherwise hold every alarm
        # back for seconds while srtt decays by an eighth a sample
        self._ceil_ms = max(retry_first_ms, self._floor_ms)
        if self._ceil_ms > retry_cap_ms:
            self._ceil_ms = retry_cap_ms
        self.rto_ms = self._ceil_ms  # until the first round trip
        self._srtt8 = 0  # smoothed round trip, x8 (0: none measured yet; virtual.py reads it)
        self._var8 = 0  # its mean deviation (RFC 6298's RTTVAR), x8
        self._top_ms = 0  # the largest recent round trip (decays towards srtt)
        self.retries = 0  # frames sent again
        self.needless = 0  # ... of which a second ACK showed that the first had arrived
        self.buf = bytearray(_SLOTS * _W)  # slot i at i * 28 (sent with write(buf, off, n))
        m = bytearray(_M_LEN)
        m[_M_PRIO : _M_PRIO + _SLOTS] = b"\xff" * _SLOTS
        self._m = m
        self._epoch = array("I", bytes(4 * (_SLOTS + _RECENT)))
        self._seq = array("H", bytes(2 * (_SLOTS + _RECENT)))
        self._t = array("i", bytes(4 * (3 * _SLOTS + _RECENT)))  # ticks (see _ADDED)
        self._r_next = 0
        self.dropped = 0
        self._sleep = Sleeper()  # the run task sleeps on it (add() wakes it)

    # ---- adding and sending ----

    def free_slot(self):
        """A free slot, else the oldest FAULT/TEST, else the oldest further press, else
        the oldest never-drop frame (counted in `dropped`)."""
        m = self._m
        for i in range(_SLOTS):
            if m[_M_PRIO + i] == _FREE:
                return i
        for prio in (_PRIO_INFO, _PRIO_FOLD, _PRIO_KEEP):
            best = -1
            for i in range(_SLOTS):
                if m[_M_PRIO + i] == prio and (
                    best < 0 or time.ticks_diff(self._t[_ADDED + i], self._t[_ADDED + best]) < 0
                ):
                    best = i
            if best >= 0:
                self.dropped += 1
                return best
        return 0

    def remember(self, mtype, epoch, seq, timed=False):
        """Note a sent counter so that its ACK will be taken; `timed`: a frame sent once
        and never again (a heartbeat), whose ACK is a round-trip sample."""
        m = self._m
        i = self._r_next
        self._epoch[_SLOTS + i] = epoch
        self._seq[_SLOTS + i] = seq
        m[_M_RTYPE + i] = mtype
        m[_M_RTIMED + i] = _R_TIMED if timed else _R_NONE
        if timed:
            self._t[_RSENT + i] = time.ticks_ms()  # type: ignore[call-overload]  # an int
        self._r_next = (i + 1) % _RECENT

    def _recent(self, epoch, seq):
        """The ring index of a recently sent counter, or -1."""
        m = self._m
        for i in range(_RECENT):
            k = _SLOTS + i
            if m[_M_RTYPE + i] and self._epoch[k] == epoch and self._seq[k] == seq:
                return i
        return -1

    def recent_type(self, epoch, seq, state=0):
        """The type of a recently sent frame with this counter, or 0. `state`: the ACK's;
        one that says the police have the incident is sent when they act, not as an
        answer to a copy: it proves nothing about the copies."""
        i = self._recent(epoch, seq)
        if i < 0:
            return 0
        m = self._m
        how = m[_M_RTIMED + i]
        if how == _R_TIMED:
            m[_M_RTIMED + i] = _R_NONE  # a second ACK of it is no round trip
            self._sample(time.ticks_diff(time.ticks_ms(), self._t[_RSENT + i]))
        elif how == _R_TWICE and state != _ACK_POLICE:
            # a second ACK of a frame sent twice: both copies reached the gateway, so
            # the first was only late and the copy was needless (RFC 3708: a duplicate
            # ACK shows a spurious retransmission). The first ACK answered the first
            # copy: that was its round trip, and the timeout grows to fit it.
            m[_M_RTIMED + i] = _R_NONE
            self.needless += 1
            self._sample(self._t[_RSENT + i])
        return m[_M_RTYPE + i]

    def _sample(self, ms):
        """One measured round trip (ms) into the timeout: smoothed RTT plus two
        deviations (RFC 6298's estimators in integers, srtt and the deviation both kept
        x8 so that the shifts lose nothing that matters), never below the largest recent
        round trip (see the top of this file)."""
        cap = self._cap_ms
        if ms > cap:
            ms = cap
        if ms < 1:
            ms = 1
        if self._srtt8 == 0:
            self._srtt8 = ms << 3
            self._var8 = ms << 2  # RTTVAR = R/2
            top = ms
        else:
            d = ms - (self._srtt8 >> 3)
            self._srtt8 += d  # SRTT += (R - SRTT)/8
            if d < 0:
                d = -d
            self._var8 += (d << 1) - (self._var8 >> 2)  # RTTVAR += (|R - SRTT| - RTTVAR)/4
            # the largest recent round trip, an eighth of the way back to srtt a sample
            top = self._top_ms
            top -= (top - (self._srtt8 >> 3)) >> 3
            if ms > top:
                top = ms
        self._top_ms = top
        rto = (self._srtt8 >> 3) + (self._var8 >> 2)  # SRTT + 2 RTTVAR
        if rto < top:
            rto = top
        if rto > self._ceil_ms:
            rto = self._ceil_ms
        if rto < self._floor_ms:
            rto = self._floor_ms
        self.rto_ms = rto

    def put(self, i, mtype, epoch, seq, n, prio, persist, now):
        m = self._m
        m[_M_N + i] = n
        m[_M_TYPE + i] = mtype
        self._epoch[i] = epoch
        self._seq[i] = seq
        m[_M_PRIO + i] = prio
        m[_M_PERSIST + i] = 1 if persist else 0
        m[_M_ATTEMPTS + i] = 0
        m[_M_WAITS + i] = 0
        self._t[_ADDED + i] = now
        self._t[i] = now

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
        # timed from the send, not from before the flash write (tens of ms on littlefs):
        # else the first retry came that much early and every alarm's round-trip
        # sample included the write
        self._send(i, time.ticks_ms())
        # the task sleeps until an older deadline (or for good): recompute
        self._sleep.wake()
        return ok

    def _send(self, i, now):
        m = self._m
        if self.link.busy() and m[_M_WAITS + i] < _LBT_TRIES:
            # listen before talk: somebody else is on the line; try again in 2-9 ms
            m[_M_WAITS + i] += 1
            self._t[i] = time.ticks_add(now, 2 + random.getrandbits(3))
            return
        m[_M_WAITS + i] = 0
        self.link.send(self.buf, m[_M_N + i], i * _W)
        self._t[_SENT + i] = now
        self.remember(m[_M_TYPE + i], self._epoch[i], self._seq[i])
        a = m[_M_ATTEMPTS + i]
        if a > 0:
            self.retries += 1
        if a < 255:
            a += 1
            m[_M_ATTEMPTS + i] = a
        ms = self.rto_ms
        # the first two copies after the timeout itself (a lost frame is noise on the
        # line, not a crowd: one more round trip), then doubling (a gateway that is away)
        for _ in range(a - 2):
            ms <<= 1
            if ms >= self._cap_ms:
                ms = self._cap_ms
                break
        # later, never earlier: up to an eighth more and two frame air times
        ms += (random.getrandbits(8) * ((ms >> 3) + (self._air_ms << 1))) >> 8
        self._t[i] = time.ticks_add(now, ms)

    # ---- acknowledgement ----

    def ack(self, epoch, seq):
        """Remove the pending frame with this counter; returns its type or 0."""
        m = self._m
        for i in range(_SLOTS):
            if m[_M_PRIO + i] != _FREE and self._epoch[i] == epoch and self._seq[i] == seq:
                m[_M_PRIO + i] = _FREE
                now = time.ticks_ms()
                if m[_M_ATTEMPTS + i] == 1:  # Karn: a resent frame's ACK may be either copy's
                    self._sample(time.ticks_diff(now, self._t[_SENT + i]))
                elif m[_M_ATTEMPTS + i] == 2:
                    # either copy's, or the first's after all: only a second ACK can
                    # tell (recent_type). Guessing from the time (an ACK within half a
                    # round trip of the copy taken for the first's, late) took a lost
                    # ACK for a late one whenever the gateway's disk was quick for the
                    # copy, and fed the timeout itself back in as a round trip: under
                    # 10 % loss it climbed to the ceiling
                    k = self._recent(epoch, seq)
                    if k >= 0:
                        m[_M_RTIMED + k] = _R_TWICE
                        self._t[_RSENT + k] = time.ticks_diff(now, self._t[_ADDED + i])
                if m[_M_PERSIST + i]:
                    self._save()
                return m[_M_TYPE + i]
        return 0

    def pending(self, mtype=0):
        """Number of pending frames (of one type, if given)."""
        m = self._m
        n = 0
        for i in range(_SLOTS):
            if m[_M_PRIO + i] != _FREE and (mtype == 0 or m[_M_TYPE + i] == mtype):
                n += 1
        return n

    # ---- persistence ----

    def _save(self):
        """Write every pending alarm-class frame to flash (startup.py reloads them)."""
        m = self._m
        out = bytearray()
        for i in range(_SLOTS):
            if m[_M_PRIO + i] != _FREE and m[_M_PERSIST + i]:
                n = m[_M_N + i]
                out.append(n)
                out.append(m[_M_PRIO + i])
                out.extend(self.buf[i * _W : i * _W + n])
        if not out:
            self._store.remove(_FILE)
            return True
        return self._store.write(_FILE, out)

    def reload(self):
        """Reload the frames still pending before the reboot (what _save() wrote); they
        are due at once. Type and counter are read from each frame's own bytes; nothing
        is re-signed. Returns the number reloaded. Boot only."""
        data = self._store.read(_FILE)
        if data is None:
            return 0
        tmp = bytearray(_W)
        pos = 0
        count = 0
        now = time.ticks_ms()
        while pos + 2 <= len(data):
            n = data[pos]
            prio = data[pos + 1]
            pos += 2
            if n < 22 or n > _W or pos + n > len(data):
                break
            tmp[: n - 1] = data[pos : pos + n - 1]  # without the 0x00 delimiter
            if proto.decode_inplace(tmp, n - 1) >= 20:
                i = self.free_slot()
                self.buf[i * _W : i * _W + n] = data[pos : pos + n]
                epoch, seq = struct.unpack_from(">IH", tmp, 4)
                self.put(i, tmp[1], epoch, seq, n, prio, True, now)
                count += 1
            pos += n
        return count

    # ---- the retransmission task ----

    def kick(self):
        """Send every pending frame that is due now, never-drop frames first. Returns
        the ms until the next one is due, -1 if nothing is pending."""
        m = self._m
        now = time.ticks_ms()
        for i in range(_SLOTS):
            if (
                m[_M_PRIO + i] != _FREE
                and m[_M_ATTEMPTS + i]
                and time.ticks_diff(self._t[i], now) <= 0
            ):
                # a retry is due: first the ACKs already on the line (Link.poll)
                self.link.poll()
                break
        for prio in (_PRIO_KEEP, _PRIO_FOLD, _PRIO_INFO):
            for i in range(_SLOTS):
                if m[_M_PRIO + i] == prio and time.ticks_diff(self._t[i], now) <= 0:
                    self._send(i, now)
        wait = -1
        for i in range(_SLOTS):
            if m[_M_PRIO + i] != _FREE:
                d = time.ticks_diff(self._t[i], now)
                if wait < 0 or d < wait:
                    wait = d
        return wait

    async def run(self):
        """The layer's task (App starts it, watches it and cancels it). Sleeps until the
        next retry is due (a frame held back while the line is busy waits its 2-9 ms,
        not a 20 ms tick: that tick was a press's whole latency budget on a busy bus),
        or, with nothing pending, until add() wakes it."""
        while True:
            wait = self.kick()
            if wait < 0:
                await self._sleep.sleep_ms(-1, 0)
                continue
            if wait < _TICK_MS:
                wait = _TICK_MS
            # an added frame is due rto_ms after it was sent, so a sleep cut into steps
            # of rto_ms never makes it late; in a long back-off (the gateway away) steps
            # of an eighth of the wait: a frame added then has its first retry up to that
            # late (its first copy went out at once), for 8 passes a wait, not 8 per RTO
            hurry = wait >> 3
            if hurry < self.rto_ms:
                hurry = self.rto_ms
            await self._sleep.sleep_ms(wait, hurry)
