"""Stream of line bytes -> COBS-decoded frames, with a bounded buffer (SPEC.md 1.1)."""

from __future__ import annotations

from collections import Counter

from protocol.cobs import cobs_decode
from protocol.errors import ProtocolError, Reason
from protocol.formats import MAX_ENCODED


class Deframer:
    """Split a byte stream at 0x00 delimiters and COBS-decode each piece.

    Never raises on input: a piece that cannot be a frame is dropped and counted in
    ``rejects`` by reason, and the deframer resyncs at the next delimiter. The buffer never
    holds more than ``max_encoded`` bytes, so a flood of garbage costs memory in O(1) and
    time in O(bytes), and the next valid frame after a delimiter always gets through.
    """

    def __init__(self, max_encoded: int = MAX_ENCODED) -> None:
        """``max_encoded`` bounds the bytes kept before a delimiter."""
        self._max = max_encoded
        self._buf = bytearray()
        self._discarding = False
        self.rejects: Counter[Reason] = Counter()
        self.frames = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Take bytes from the line; return the decoded frames they complete, in order."""
        out: list[bytes] = []
        start = 0
        n = len(data)
        while start < n:
            end = data.find(0, start)
            if end < 0:
                self._append(data[start:])
                break
            self._append(data[start:end])
            piece = bytes(self._buf)
            discarded = self._discarding
            self._buf.clear()
            self._discarding = False
            start = end + 1
            if discarded or not piece:
                continue
            try:
                out.append(cobs_decode(piece))
            except ProtocolError as exc:
                self.rejects[exc.reason] += 1
                continue
            self.frames += 1
        return out

    def _append(self, chunk: bytes) -> None:
        if self._discarding:
            return
        if len(self._buf) + len(chunk) > self._max:
            self._buf.clear()
            self._discarding = True
            self.rejects[Reason.OVERSIZE] += 1
            return
        self._buf += chunk
