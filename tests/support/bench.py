"""The scripts in bench/, imported by the tests that run them (bench/ is not a package).

duty_sim = bench_module("duty_sim")      # bench/duty_sim.py, as module ``duty_sim``
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_module(name: str) -> ModuleType:
    """``bench/<name>.py`` imported as the module ``name`` (registered, so that its
    dataclasses resolve their own module)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
