"""The replay window of SPEC.md 1.4."""

from __future__ import annotations

import pytest

from protocol import ProtocolError, Reason, ReplayGuard, Verdict


def replayed(g: ReplayGuard, unit: int, epoch: int, seq: int) -> bool:
    with pytest.raises(ProtocolError) as e:
        g.observe(unit, epoch, seq)
    return e.value.reason is Reason.REPLAYED


def test_fresh_then_duplicate() -> None:
    g = ReplayGuard()
    assert g.observe(1, 5, 10) is Verdict.FRESH
    assert g.observe(1, 5, 10) is Verdict.DUPLICATE
    assert g.observe(1, 5, 11) is Verdict.FRESH


def test_reordered_within_window_is_fresh_once() -> None:
    g = ReplayGuard()
    g.observe(1, 5, 100)
    assert g.observe(1, 5, 90) is Verdict.FRESH  # a frame that was delayed or missed
    assert g.observe(1, 5, 90) is Verdict.DUPLICATE
    assert g.observe(1, 5, 37) is Verdict.FRESH  # 63 below: the window's edge
    assert replayed(g, 1, 5, 36)  # 64 below


def test_window_slides() -> None:
    g = ReplayGuard()
    for s in range(200):
        assert g.observe(1, 5, s) is Verdict.FRESH
    assert g.observe(1, 5, 199 - 63) is Verdict.DUPLICATE
    assert replayed(g, 1, 5, 199 - 64)


def test_pending_alarm_from_previous_boot_is_accepted_once() -> None:
    g = ReplayGuard()
    g.observe(1, 5, 3)
    g.observe(1, 6, 0)  # the unit rebooted; its epoch-5 alarm seq 4 never arrived
    assert g.observe(1, 5, 4) is Verdict.FRESH
    assert g.observe(1, 5, 4) is Verdict.DUPLICATE


def test_epoch_older_than_eight_is_replayed() -> None:
    g = ReplayGuard()
    g.observe(1, 10, 0)
    assert g.observe(1, 3, 0) is Verdict.FRESH  # 10 - 7
    assert replayed(g, 1, 2, 0)  # 10 - 8
    g.observe(1, 20, 0)
    assert replayed(g, 1, 10, 1)
    assert [e for e, _, _ in g.state(1)] == [20]


def test_units_are_independent() -> None:
    g = ReplayGuard()
    g.observe(1, 5, 10)
    assert g.observe(2, 5, 10) is Verdict.FRESH


def test_state_survives_a_restart() -> None:
    g = ReplayGuard()
    for s in (1, 2, 3, 50):
        g.observe(7, 9, s)
    g.observe(7, 8, 1)
    saved = {u: g.state(u) for u in g.units()}
    h = ReplayGuard()
    for u, st in saved.items():
        h.load(u, st)
    assert h.observe(7, 9, 50) is Verdict.DUPLICATE
    assert h.observe(7, 9, 2) is Verdict.DUPLICATE
    assert h.observe(7, 9, 4) is Verdict.FRESH
    assert h.observe(7, 8, 1) is Verdict.DUPLICATE


def test_check_does_not_record() -> None:
    g = ReplayGuard()
    assert g.check(1, 1, 1) is Verdict.FRESH
    assert g.check(1, 1, 1) is Verdict.FRESH
    g.record(1, 1, 1)
    assert g.check(1, 1, 1) is Verdict.DUPLICATE
