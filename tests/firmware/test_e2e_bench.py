"""bench/e2e.py: its questions to the units (a unit that does not answer is one line) and
its accounting of presses (taken by the units, counted by the police, lost)."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gateway.sim.fleet import Heard
from protocol import Alarm, AlarmKind, Frame
from tests.firmware.conftest import UnitFactory

E2E = Path(__file__).resolve().parents[2] / "bench" / "e2e.py"


def load_e2e() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_e2e", E2E)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.mp64_only
async def test_a_unit_that_does_not_answer_its_link_query_is_named_not_a_traceback(
    make_unit: UnitFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: under load a unit's process may not answer ``link`` within 3 s, and
    the whole run ended in a traceback. Now its figures are missing, named in one line,
    and the other units' figures are still collected."""
    e2e = load_e2e()
    awake, _ = await make_unit()
    asleep, _ = await make_unit("home-zhao")
    await asleep.link_timing()  # it answers while it runs
    assert asleep.pid is not None
    os.kill(asleep.pid, signal.SIGSTOP)  # a process that gets no CPU
    try:
        timings, silent = await e2e.link_timings([asleep, awake], timeout_s=0.5)
    finally:
        os.kill(asleep.pid, signal.SIGCONT)
    assert silent == [asleep.name]
    assert len(timings) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and asleep.name in err and "missing" in err, err
    assert "Traceback" not in err
    assert sys.modules.get("bench_e2e") is None  # loaded apart, not as a side effect


def alarm(
    unit: str, seq: int, presses: int, press_ms: int, kind: AlarmKind = AlarmKind.PANIC
) -> tuple[Heard, Frame]:
    """An ALARM frame as the bench's listener on the link hears it."""
    return Heard("bus-a", unit, b"", 0.0, True), Frame(1, 7, seq, Alarm(kind, presses, press_ms))


def test_presses_folded_into_one_alarm_frame_are_taken_and_not_lost() -> None:
    """Regression: ``taken_by_units`` counted distinct ALARM frames, ``delivered`` the
    presses the police counted; a unit that folds a press into its series' next frame
    (the ALARM was still owed) made frames < presses, ``lost`` went negative (-3 in a
    run) and the bench exited 1 as if an alarm was lost."""
    e2e = load_e2e()
    heard = [
        alarm("shop-01", 0, 1, 5_000),  # press 1 opens the series
        alarm("shop-01", 1, 3, 5_000),  # presses 2 and 3 in one frame
        alarm("shop-01", 1, 3, 5_000),  # its retransmission
        alarm("shop-01", 2, 3, 5_000, AlarmKind.DURESS),  # held: the upgrade, no press
        alarm("home-02", 0, 1, 7_000),  # two series of one press each
        alarm("home-02", 1, 1, 9_000),
    ]
    taken = e2e.presses_taken(heard)
    assert taken == {"shop-01": 3, "home-02": 2}  # 5 presses in 5 distinct frames...
    assert len({(h.sender, f.epoch, f.seq) for h, f in heard}) == 5  # ... by chance only
    assert e2e.lost_presses(taken, {"shop-01": 3, "home-02": 2}) == 0


def test_a_press_missing_at_the_police_is_lost_and_no_other_unit_offsets_it() -> None:
    """A press taken and never counted by the police is lost 1, however the other units
    fare: a folded press elsewhere (frames < presses) or a unit the police credit with a
    press more than it took must not hide it."""
    e2e = load_e2e()
    heard = [
        alarm("shop-01", 0, 1, 5_000),
        alarm("shop-01", 1, 3, 5_000),  # two presses in one frame
        alarm("home-02", 0, 1, 7_000),
        alarm("home-02", 1, 1, 9_000),
    ]
    taken = e2e.presses_taken(heard)
    frames = 4
    delivered = {"shop-01": 3, "home-02": 1}  # home-02's second press never arrived
    assert frames - sum(delivered.values()) == 0  # what the frame count made of it
    assert e2e.lost_presses(taken, delivered) == 1
    over = {"shop-01": 4, "home-02": 1}  # a gateway that counts shop-01 one press too many
    assert e2e.lost_presses(taken, over) == 1
    assert e2e.beyond_taken(taken, over) == 1
    assert e2e.lost_presses(taken, {}) == 5  # the police have nothing
