"""A MicroPython job run to its end: what it printed after ``RESULT `` (one JSON line)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any


def job_result(argv: Sequence[str], timeout: float = 30) -> Any:
    """Run ``argv`` (a MicroPython and its job); assert it exited 0; its RESULT, decoded."""
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))
