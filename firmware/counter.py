# The unit's frame counter (SPEC.md 1.3): boot epoch (u32, stored before anything is
# sent) and seq (u16). One flash write per boot, and one per 65536 frames.
#
# The epoch is kept in two records, written one after the other; the larger valid one
# wins at boot. If power fails while one is written, the other still holds an epoch at
# least as high as any epoch used before, so a counter is never used twice.
import struct
from micropython import const

_NAMES = ("epoch.a", "epoch.b")
_SEQ_MAX = const(0xFFFF)
_EPOCH_MAX = const(0xFFFFFFFF)


class Counter:
    def __init__(self, store):
        self._store = store
        self.epoch = 0
        self._seq = 0
        self.ready = False

    def stored_epoch(self):
        best = 0
        for name in _NAMES:
            data = self._store.read(name)
            if data is not None and len(data) == 4:
                e = struct.unpack(">I", data)[0]
                if e > best:
                    best = e
        return best

    def _store_epoch(self, e):
        data = struct.pack(">I", e)
        ok = True
        for name in _NAMES:
            if not self._store.write(name, data):
                ok = False
        return ok

    def boot(self):
        """Take the next epoch and store it. Returns False if storage failed: then no
        frame may be sent until boot() succeeds (the caller retries with backoff)."""
        e = self.stored_epoch() + 1
        if e > _EPOCH_MAX:
            # 2^32 boots: unreachable in service; refuse rather than wrap and reuse
            return False
        if not self._store_epoch(e):
            return False
        self.epoch = e
        self._seq = 0
        self.ready = True
        return True

    def next(self):
        """The next seq (read `epoch` after it), or -1 if a new epoch could not be stored."""
        if not self.ready:
            return -1
        if self._seq > _SEQ_MAX:
            if self.epoch >= _EPOCH_MAX or not self._store_epoch(self.epoch + 1):
                return -1
            self.epoch += 1
            self._seq = 0
        s = self._seq
        self._seq = s + 1
        return s
