# Uptime in ms beyond the 2^30 ms wrap of time.ticks_ms(): fold() must be called more
# often than every 2^29 ms (the supervisor calls it every second).
import time


class Uptime:
    def __init__(self):
        self._last = time.ticks_ms()
        self._base_s = 0
        self._part_ms = 0

    def fold(self):
        now = time.ticks_ms()
        self._part_ms += time.ticks_diff(now, self._last)
        self._last = now
        if self._part_ms >= 1000:
            q = self._part_ms // 1000
            self._base_s += q
            self._part_ms -= q * 1000

    def s(self):
        self.fold()
        return self._base_s

    def ms32(self):
        """Uptime in ms modulo 2^32 (the wire's press_ms)."""
        self.fold()
        return (self._base_s * 1000 + self._part_ms) & 0xFFFFFFFF
