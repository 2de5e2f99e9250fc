"""The per-unit replay window of SPEC.md section 1.4."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from protocol.errors import ProtocolError, Reason

WINDOW = 64
EPOCHS = 8
_MASK = (1 << WINDOW) - 1


class Verdict(enum.StrEnum):
    """How an authentic frame's counter relates to what was accepted before."""

    FRESH = "fresh"
    DUPLICATE = "duplicate"


@dataclass(slots=True)
class EpochWindow:
    """Highest seq accepted in one epoch and the bitmap below it (bit i: ``top - i`` seen)."""

    epoch: int
    top: int
    bitmap: int


class ReplayGuard:
    """Remember which counters each unit has used; classify new ones as fresh or duplicate.

    ``check`` classifies without changing state; ``record`` remembers an accepted counter
    (call it once the frame is journalled); ``observe`` does both. The state of a unit is
    exported by ``state`` and restored by ``load`` so a gateway restart keeps it.
    """

    def __init__(self, window: int = WINDOW, epochs: int = EPOCHS) -> None:
        """``window`` seq values per epoch (at most 64), ``epochs`` epochs kept per unit."""
        if not 1 <= window <= WINDOW:
            raise ValueError("window must be 1..64")
        self._window = window
        self._epochs = epochs
        self._units: dict[int, list[EpochWindow]] = {}

    def check(self, unit: int, epoch: int, seq: int) -> Verdict:
        """Return the verdict for a counter, or raise ``ProtocolError(replayed)``."""
        wins = self._units.get(unit)
        if not wins:
            return Verdict.FRESH
        newest = wins[-1].epoch
        if epoch <= newest - self._epochs:
            raise ProtocolError(
                Reason.REPLAYED, f"unit {unit} epoch {epoch}, newest is {newest}", unit
            )
        for w in wins:
            if w.epoch == epoch:
                if seq > w.top:
                    return Verdict.FRESH
                back = w.top - seq
                if back >= self._window:
                    raise ProtocolError(
                        Reason.REPLAYED, f"unit {unit} {epoch}:{seq} below window top {w.top}", unit
                    )
                return Verdict.DUPLICATE if (w.bitmap >> back) & 1 else Verdict.FRESH
        return Verdict.FRESH

    def record(self, unit: int, epoch: int, seq: int) -> None:
        """Remember that counter (epoch, seq) of ``unit`` was accepted."""
        wins = self._units.setdefault(unit, [])
        for w in wins:
            if w.epoch == epoch:
                if seq > w.top:
                    shift = seq - w.top
                    w.bitmap = ((w.bitmap << shift) | 1) & _MASK if shift < WINDOW else 1
                    w.top = seq
                elif w.top - seq < self._window:
                    w.bitmap |= 1 << (w.top - seq)
                return
        wins.append(EpochWindow(epoch, seq, 1))
        wins.sort(key=lambda w: w.epoch)
        newest = wins[-1].epoch
        wins[:] = [w for w in wins if w.epoch > newest - self._epochs]

    def observe(self, unit: int, epoch: int, seq: int) -> Verdict:
        """Check and, if fresh, record a counter; raise ``ProtocolError(replayed)`` if too old."""
        verdict = self.check(unit, epoch, seq)
        if verdict is Verdict.FRESH:
            self.record(unit, epoch, seq)
        return verdict

    def state(self, unit: int) -> list[tuple[int, int, int]]:
        """The unit's windows as ``(epoch, top, bitmap)`` tuples, oldest epoch first."""
        return [(w.epoch, w.top, w.bitmap) for w in self._units.get(unit, [])]

    def load(self, unit: int, state: list[tuple[int, int, int]]) -> None:
        """Restore what :meth:`state` exported."""
        wins = sorted((EpochWindow(e, t, b & _MASK) for e, t, b in state), key=lambda w: w.epoch)
        if wins:
            newest = wins[-1].epoch
            wins = [w for w in wins if w.epoch > newest - self._epochs]
        self._units[unit] = wins

    def units(self) -> list[int]:
        """Units with any recorded state."""
        return list(self._units)
