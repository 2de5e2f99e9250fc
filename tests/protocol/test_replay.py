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


# Regression cases named after the mutants that once survived (issue 19).


def test_jump_of_a_whole_window_remembers_the_new_top() -> None:
    """A jump of 64 or more restarts the bitmap at the new top, marked as seen."""
    for jump in (64, 65, 1000, 0xFFFF - 5):
        g = ReplayGuard()
        g.observe(1, 5, 5)
        assert g.observe(1, 5, 5 + jump) is Verdict.FRESH
        assert g.observe(1, 5, 5 + jump) is Verdict.DUPLICATE, jump
        assert g.state(1) == [(5, 5 + jump, 1)]
        # what was below the old top is out of the window now, replayed
        assert replayed(g, 1, 5, 5)


def test_jump_just_inside_the_window_keeps_the_old_top() -> None:
    g = ReplayGuard()
    g.observe(1, 5, 5)
    g.observe(1, 5, 5 + 63)
    assert g.state(1) == [(5, 68, (1 << 63) | 1)]
    assert g.observe(1, 5, 5) is Verdict.DUPLICATE
    assert g.observe(1, 5, 6) is Verdict.FRESH


def test_late_frame_does_not_wipe_the_top() -> None:
    """A late arrival sets its own bit and keeps the others: the top still replays."""
    g = ReplayGuard()
    for s in (100, 98):
        g.observe(1, 5, s)
    assert g.observe(1, 5, 90) is Verdict.FRESH  # late
    assert g.observe(1, 5, 100) is Verdict.DUPLICATE
    assert g.observe(1, 5, 98) is Verdict.DUPLICATE
    assert g.observe(1, 5, 90) is Verdict.DUPLICATE
    assert g.state(1) == [(5, 100, 1 | (1 << 2) | (1 << 10))]


def test_record_below_the_window_changes_nothing() -> None:
    g = ReplayGuard()
    g.record(1, 5, 100)
    g.record(1, 5, 36)  # 64 below the top: no bit for it
    assert g.state(1) == [(5, 100, 1)]


def test_bitmap_stays_within_64_bits() -> None:
    g = ReplayGuard()
    for s in range(300):
        g.observe(1, 5, s)
    assert g.state(1) == [(5, 299, (1 << 64) - 1)]
    g.observe(1, 5, 301)
    assert g.state(1) == [(5, 301, ((1 << 64) - 1) & (((1 << 64) - 1) << 2 | 1))]


def test_load_trims_epochs_older_than_eight_and_masks_the_bitmap() -> None:
    h = ReplayGuard()
    saved = [(e, 10, 1) for e in range(20, 8, -1)]  # 12 epochs, newest first
    saved[0] = (20, 10, (1 << 70) | 0b11)  # bits past 64 from a corrupt journal
    h.load(3, saved)
    assert h.state(3) == [(e, 10, 1) for e in range(13, 20)] + [(20, 10, 0b11)]
    assert h.units() == [3]
    assert h.observe(3, 13, 10) is Verdict.DUPLICATE  # kept
    assert replayed(h, 3, 12, 11)  # trimmed and too old


def test_load_of_nothing_leaves_the_unit_empty() -> None:
    h = ReplayGuard()
    h.load(3, [])
    assert h.state(3) == []
    assert h.observe(3, 1, 1) is Verdict.FRESH


def test_new_epoch_trims_the_oldest_on_record() -> None:
    g = ReplayGuard()
    for e in range(1, 10):
        g.observe(1, e, 0)
    assert [e for e, _, _ in g.state(1)] == list(range(2, 10))
    assert g.observe(1, 2, 0) is Verdict.DUPLICATE
    assert replayed(g, 1, 1, 0)


def test_epoch_arriving_out_of_order_is_kept_sorted() -> None:
    g = ReplayGuard()
    g.observe(1, 9, 0)
    g.observe(1, 4, 0)
    g.observe(1, 6, 0)
    assert [e for e, _, _ in g.state(1)] == [4, 6, 9]
    assert g.observe(1, 4, 0) is Verdict.DUPLICATE


def test_smaller_window_and_bounds() -> None:
    g = ReplayGuard(window=16, epochs=2)
    g.observe(1, 5, 100)
    assert g.observe(1, 5, 85) is Verdict.FRESH
    assert replayed(g, 1, 5, 84)
    g.record(1, 5, 84)  # below the small window: not remembered
    assert g.state(1) == [(5, 100, 1 | (1 << 15))]
    g.observe(1, 6, 0)
    assert g.observe(1, 5, 86) is Verdict.FRESH  # 6 - 1: still kept with epochs=2
    assert replayed(g, 1, 4, 0)
    assert ReplayGuard(window=1).observe(1, 1, 1) is Verdict.FRESH
    for bad in (0, 65):
        with pytest.raises(ValueError):
            ReplayGuard(window=bad)


def test_replayed_error_names_the_unit() -> None:
    g = ReplayGuard()
    g.observe(42, 10, 100)
    for epoch, seq in ((2, 0), (10, 0)):
        with pytest.raises(ProtocolError) as e:
            g.check(42, epoch, seq)
        assert e.value.reason is Reason.REPLAYED
        assert e.value.unit == 42


def test_defaults_are_a_64_frame_window_and_8_epochs() -> None:
    from protocol import replay

    assert (replay.WINDOW, replay.EPOCHS) == (64, 8)


def test_state_of_an_unknown_unit_is_empty() -> None:
    assert ReplayGuard().state(99) == []
