"""gateway/sim/frozen32.py: where the MicroPython source is found, and what happens without one
(the build itself runs once per session in tests/firmware's ``frozen32_binary`` fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sim import frozen32


def test_source_is_a_tree_an_archive_or_a_folder_holding_the_archive(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "py").mkdir(parents=True)
    (tree / "py" / "mpconfig.h").write_text("")
    assert frozen32.find_source({"MICROPY_SRC": str(tree)}) == tree
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    archive = shelf / "micropython-1.28.0-src.tar.xz"
    archive.write_bytes(b"")
    assert frozen32.find_source({"MICROPY_SRC": str(archive)}) == archive
    assert frozen32.find_source({"MICROPY_SRC": str(shelf)}) == archive
    assert frozen32.find_source({"MICROPY_SRC": str(tmp_path / "none")}) is None
    (tmp_path / "empty").mkdir()
    assert frozen32.find_source({"MICROPY_SRC": str(tmp_path / "empty")}) is None


def test_missing_source_is_one_line_and_fails_only_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MICROPY_SRC", str(tmp_path / "nowhere"))
    monkeypatch.delenv("CI", raising=False)
    assert frozen32.main([]) == 2
    assert frozen32.main(["--if-source"]) == 0
    monkeypatch.setenv("CI", "true")
    assert frozen32.main(["--if-source"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [frozen32.SOURCE_HINT] * 3
    assert "MICROPY_SRC" in frozen32.SOURCE_HINT and "v1.28.0" in frozen32.SOURCE_HINT
    with pytest.raises(frozen32.Frozen32BuildError, match="MICROPY_SRC"):
        frozen32.ensure({"MICROPY_SRC": str(tmp_path / "nowhere")})
