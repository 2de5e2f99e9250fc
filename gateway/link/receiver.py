"""Line bytes -> authentic frames with a replay verdict, handed on in batches.

One :class:`protocol.Deframer` per link. Every frame the codec or the replay window
rejects is dropped and counted under its reason (per link) and logged at most once per
``REJECT_LOG_INTERVAL_S`` per link and reason (with the count); security rejects also go
to the sink (a rate-limited ``forgery`` event). Nothing here raises on input, and a read
is at most one chunk of the line, so garbage costs time in proportion to its bytes and
the valid frames around it get through.
The frames completed by one read from the line go to the pipeline as one batch, so they
are journalled in one transaction (group commit) and ACKed together.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from protocol import Codec, Deframer, Frame, ProtocolError, Reason, ReplayGuard, Verdict

log = logging.getLogger(__name__)

# a reject reason is logged at most this often per link (with the count since)
REJECT_LOG_INTERVAL_S = 10.0
# rejects that mean someone sends frames in a unit's name without its key or counter
SECURITY = frozenset({Reason.FORGED, Reason.REPLAYED, Reason.UNKNOWN_UNIT})


@dataclass(frozen=True, slots=True)
class Received:
    """An authentic frame as it came off a link, with the replay window's verdict."""

    link: str
    frame: Frame
    verdict: Verdict


class FrameSink(Protocol):
    """The next layer up (the pipeline)."""

    def on_frames(self, link: str, items: Sequence[Received]) -> None:
        """Authentic frames from one read of ``link``, in line order."""
        ...

    def on_link(self, link: str, up: bool) -> None:
        """``link`` went down or came back."""
        ...

    def on_security_reject(self, link: str, reason: Reason, addr: int | None) -> None:
        """A frame failed authentication or replay (``addr``: the unit it claimed)."""
        ...


class Receiver:
    """Deframe, decode and classify; count every reject."""

    def __init__(self, codec: Codec, guard: ReplayGuard, sink: FrameSink) -> None:
        """``guard`` is only read here; the pipeline records counters once journalled."""
        self._codec = codec
        self._guard = guard
        self._sink = sink
        self._deframers: dict[str, Deframer] = {}
        self._decode_rejects: dict[str, Counter[Reason]] = {}
        self._last_log: dict[tuple[str, Reason], tuple[float, int]] = {}
        self.frames = 0
        self.link_frames: Counter[str] = Counter()  # authentic frames per link

    def on_bytes(self, link: str, data: bytes) -> None:
        """Feed line bytes; pass complete authentic frames on."""
        deframer = self._deframers.get(link)
        if deframer is None:
            deframer = self._deframers[link] = Deframer()
            self._decode_rejects[link] = Counter()
        before = sum(deframer.rejects.values())
        items: list[Received] = []
        seen: set[tuple[int, int, int]] = set()
        for raw in deframer.feed(data):
            try:
                frame = self._codec.decode(raw)
                verdict = self._guard.check(frame.unit, frame.epoch, frame.seq)
            except ProtocolError as exc:
                self._reject(link, exc)
                continue
            key = (frame.unit, frame.epoch, frame.seq)
            if key in seen:
                verdict = Verdict.DUPLICATE  # the same frame twice in one read
            seen.add(key)
            items.append(Received(link, frame, verdict))
        if sum(deframer.rejects.values()) != before:
            for reason in deframer.rejects:
                self._maybe_log(link, reason, None)
        if items:
            self.frames += len(items)
            self.link_frames[link] += len(items)
            self._sink.on_frames(link, items)

    def on_link(self, link: str, up: bool) -> None:
        """Pass link state on; a link that went down starts again with an empty buffer."""
        if not up and link in self._deframers:
            old = self._deframers.pop(link)
            fresh = Deframer()
            fresh.rejects.update(old.rejects)  # keep the counts
            fresh.frames = old.frames
            self._deframers[link] = fresh
        self._sink.on_link(link, up)

    def rejects(self, link: str | None = None) -> Counter[str]:
        """Rejects by reason, on one link or all."""
        out: Counter[str] = Counter()
        for lid, deframer in self._deframers.items():
            if link is None or lid == link:
                out.update({r.value: n for r, n in deframer.rejects.items()})
                out.update({r.value: n for r, n in self._decode_rejects[lid].items()})
        return out

    def _reject(self, link: str, exc: ProtocolError) -> None:
        self._decode_rejects[link][exc.reason] += 1
        self._maybe_log(link, exc.reason, exc)
        if exc.reason in SECURITY:
            try:
                self._sink.on_security_reject(link, exc.reason, exc.unit)
            except Exception:
                log.exception("link %s: reporting a %s reject failed", link, exc.reason.value)

    def _maybe_log(self, link: str, reason: Reason, exc: ProtocolError | None) -> None:
        total = self._decode_rejects[link][reason] + self._deframers[link].rejects[reason]
        now = time.monotonic()
        last_at, last_total = self._last_log.get((link, reason), (-1e9, 0))
        if now - last_at < REJECT_LOG_INTERVAL_S or total == last_total:
            return
        self._last_log[(link, reason)] = (now, total)
        log.log(
            logging.WARNING if reason in SECURITY else logging.INFO,
            "link %s: rejected frame (%s%s), %d %s rejects so far",
            link,
            reason.value,
            f": {exc.detail}" if exc is not None and exc.detail else "",
            total,
            reason.value,
        )
