# The unit's frame counter (SPEC.md 1.3) and its boot record: boot epoch (u32, stored
# before anything is sent), seq (u16), and the crash-loop count that decides safe mode.
#
# The boot record is ">IBB": epoch, `unhealthy` (boots in a row, ending with this one,
# that have not reached a healthy state), flags (bit 0: this boot runs in safe mode). It
# is written once at boot (epoch + 1, unhealthy + 1: begin() reads the record and
# decides), once more when the boot has been healthy for healthy_ms (unhealthy = 0), and
# once per 65536 frames (next epoch).
#
# The record is kept in two files, written one after the other; the larger valid epoch
# wins at boot. If power fails while one is written, the other still holds an epoch at
# least as high as any epoch used before, so a counter is never used twice. A 4-byte
# record (firmware 1.0: the epoch alone) reads as a healthy boot.
import struct
from micropython import const

_SEQ_MAX = const(0xFFFF)
_EPOCH_MAX = const(0xFFFFFFFF)
_SAFE = const(1)


class Counter:
    def __init__(self, store):
        self._store = store
        self.epoch = 0
        self.seq = 0
        self.ready = False  # the epoch is stored: counters may be used
        self.unhealthy = 0  # boots in a row before this one that did not become healthy
        self.safe = False  # this boot runs in safe mode
        self.was_safe = False  # the boot before this one ran in safe mode
        self.count = 0  # `unhealthy` as stored for this boot (0 once it is healthy)

    def begin(self, crashed, safe_after):
        """Take the next epoch and store it with this boot counted as not yet healthy.

        The boot record's larger valid epoch wins. `crashed`: the previous boot ended in a
        crash or a watchdog reset (not a power cut): only then does it count towards safe
        mode. Safe mode when `safe_after` boots in a row did not become healthy. False if
        storage failed: then no frame may be sent until this succeeds (startup retries).
        """
        e, n, flags = 0, 0, 0
        for name in ("epoch.a", "epoch.b"):
            data = self._store.read(name)
            if data is None:
                continue
            if len(data) == 6:
                rec = struct.unpack(">IBB", data)
            elif len(data) == 4:
                rec = (struct.unpack(">I", data)[0], 0, 0)  # firmware 1.0: a healthy boot
            else:
                continue
            if rec[0] > e:
                e, n, flags = rec
        e += 1
        if e > _EPOCH_MAX:
            # 2^32 boots: unreachable in service; refuse rather than wrap and reuse
            return False
        self.unhealthy = n if crashed else 0
        self.safe = self.unhealthy >= safe_after
        self.was_safe = bool(flags & _SAFE)
        self.count = self.unhealthy + 1
        if not self.store(e):
            return False
        self.epoch = e
        self.seq = 0
        self.ready = True
        return True

    def store(self, e):
        """Write the boot record with epoch e to both copies; False if either failed."""
        data = struct.pack(">IBB", e, min(self.count, 255), _SAFE if self.safe else 0)
        ok = True
        for name in ("epoch.a", "epoch.b"):
            if not self._store.write(name, data):
                ok = False
        return ok

    def healthy(self):
        """This boot has run healthy: the crash-loop count starts again from zero."""
        self.count = 0
        return self.store(self.epoch)

    def next(self):
        """The next seq (read `epoch` after it), or -1 if a new epoch could not be stored."""
        if not self.ready:
            return -1
        if self.seq > _SEQ_MAX:
            if self.epoch >= _EPOCH_MAX or not self.store(self.epoch + 1):
                return -1
            self.epoch += 1
            self.seq = 0
        s = self.seq
        self.seq = s + 1
        return s
