"""Fixtures for supervision, guard duty, shifts and reports: real SQLite files in tmp_path,
a recording Outlet (the narrow port the pipeline implements), frame builders."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.duty.helpers import Frames, open_db


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def conn(db_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_db(db_path)
    yield c
    c.close()


@pytest.fixture
def frames() -> Frames:
    return Frames()
