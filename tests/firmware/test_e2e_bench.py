"""bench/e2e.py's questions to the units: a unit that does not answer is one line."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from pathlib import Path
from types import ModuleType

import pytest

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
