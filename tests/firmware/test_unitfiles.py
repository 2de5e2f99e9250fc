"""One way to build a unit's files (gateway/flashing/unitfiles.py, issue 13 item 3): what
``campusguard deploy`` stages for mpremote and what a virtual unit boots from are the same
bytes, with the same filter, the key 0600 and the installation-test marker."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gateway.core.config import Config
from gateway.flashing.deploy import stage
from gateway.flashing.unitfiles import (
    CONFIG_FILE,
    HOST_ONLY,
    INSTALL_TEST_FILE,
    KEY_FILE,
    ROMFS_IMAGE,
    romfs_image,
)
from gateway.sim.vboard import prepare_unit_dir
from protocol.keys import TEST_KEY


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_deploy_and_a_virtual_unit_hold_the_same_files(
    register: Config, fw_cache: Path, tmp_path: Path
) -> None:
    unit = register.units["shop-fruit"]
    staged = tmp_path / "staged"
    virtual = tmp_path / "virtual"
    hashes = stage(unit, TEST_KEY, staged, fw_cache)
    prepare_unit_dir(virtual, unit, TEST_KEY, compiled=True, cache=fw_cache, install_test=True)

    assert _tree(virtual) == _tree(staged)  # unit.json byte for byte too
    assert set(hashes) == set(_tree(staged))
    cfg = json.loads((virtual / CONFIG_FILE).read_text())
    assert list(cfg) == sorted(cfg)
    assert cfg["fw_files"].keys() == set(_tree(virtual)) - {
        CONFIG_FILE,
        KEY_FILE,
        INSTALL_TEST_FILE,
    }
    assert not set(cfg["fw_files"]) & {*HOST_ONLY, "manifest.mpy", "board/conform.mpy"}
    assert (virtual / KEY_FILE).read_text() == TEST_KEY.hex() + "\n"
    for folder in (staged, virtual):
        assert (folder / KEY_FILE).stat().st_mode & 0o777 == 0o600
        assert (folder / INSTALL_TEST_FILE).exists()


def test_romfs_deploy_and_a_romfs_virtual_unit_hold_the_same_files(
    register: Config, fw_cache: Path, tmp_path: Path
) -> None:
    unit = register.units["shop-fruit"]
    staged = tmp_path / "staged"
    virtual = tmp_path / "virtual"
    stage(unit, TEST_KEY, staged, fw_cache, code=False, image=romfs_image(fw_cache))
    prepare_unit_dir(virtual, unit, TEST_KEY, cache=fw_cache, romfs=True, install_test=True)

    assert _tree(virtual) == _tree(staged)
    fw_files = json.loads((virtual / CONFIG_FILE).read_text())["fw_files"]
    assert fw_files.keys() == {"main.py", ROMFS_IMAGE}


def test_key_is_0600_over_an_older_readable_key_and_whatever_the_umask(
    register: Config, fw_cache: Path, tmp_path: Path
) -> None:
    unit = register.units["shop-fruit"]
    (tmp_path / KEY_FILE).write_text("old\n")
    (tmp_path / KEY_FILE).chmod(0o644)
    old_umask = os.umask(0)
    try:
        prepare_unit_dir(tmp_path, unit, TEST_KEY, cache=fw_cache)
    finally:
        os.umask(old_umask)
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / KEY_FILE).read_text() == TEST_KEY.hex() + "\n"
    assert not (tmp_path / INSTALL_TEST_FILE).exists()  # only when asked


def test_a_unit_folder_keeps_its_pending_outbox(
    register: Config, fw_cache: Path, tmp_path: Path
) -> None:
    unit = register.units["shop-fruit"]
    (tmp_path / "outbox.bin").write_bytes(b"\x07")
    prepare_unit_dir(tmp_path, unit, TEST_KEY, compiled=True, cache=fw_cache)
    assert (tmp_path / "outbox.bin").read_bytes() == b"\x07"
