"""The one way to make a unit's files: firmware, ``unit.json``, ``unit.key``, the marker.

``campusguard deploy`` stages them in a folder and copies that onto the ESP32 with
mpremote; a virtual unit (:func:`gateway.sim.vboard.prepare_unit_dir`) boots from such a
folder directly. Both call :func:`write_unit_files`, so a virtual unit's flash holds
what a deployed one holds: the same firmware files (the same filter), the same
``unit.json`` bytes (keys sorted, ``fw_files`` with the sha256 of every firmware file),
the key written with mode 0600 from its first byte, and the installation-test marker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.core.config import Unit, load_config, unit_not_found
from gateway.core.errors import FirmwareBuildError, KeyMissingError, UsageError
from protocol.keys import key_path, read_key


def _firmware_dir() -> Path:
    """The firmware's sources: package data of an installed wheel, else the checkout's."""
    here = Path(__file__).resolve().parents[1]
    packaged = here / "firmware"  # pyproject.toml maps firmware/ to gateway.firmware
    return packaged if packaged.is_dir() else here.parent / "firmware"


FIRMWARE_DIR = _firmware_dir()
CONFIG_FILE = "unit.json"
KEY_FILE = "unit.key"
INSTALL_TEST_FILE = "install.test"
"""Deploy's marker: the unit sends the installation TEST (kind 1, Contact ID 601) at the
next boot, and removes the file once the gateway ACKed it."""
ROMFS_IMAGE = "romfs.img"
"""The ROMFS image as a file in a virtual unit's folder, standing for an ESP32's ROMFS
partition (``mpremote romfs build`` output; :func:`romfs_image`)."""
SOURCE_ONLY = ("main.py",)
"""Files that stay source on a unit (everything else may be mpy-cross compiled)."""
HOST_ONLY = ("manifest.py", "manifest_virtual.py", "board/conform.py")
"""Files in ``firmware/`` that never go onto a unit (the freeze manifests, and the check
of both boards against the board interface, ``board/iface.pyi``)."""
KEY_MODE = 0o600
"""The key file's mode: readable by its owner only."""


@dataclass(frozen=True, slots=True)
class UnitToFlash:
    """A unit as the register and the key directory give it: what its files are made of."""

    unit: Unit
    key: bytes
    baud: int  # its link's, written into unit.json


def unit_to_flash(config: str | Path, unit_id: str, keydir: str | Path) -> UnitToFlash:
    """The unit ``unit_id`` of the register ``config`` and its key from ``keydir``.

    A unit not in the register is a :class:`UsageError`, a missing or bad key a
    :class:`KeyMissingError`, each naming what to do.
    """
    cfg = load_config(config)
    unit = cfg.units.get(unit_id)
    if unit is None:
        raise UsageError(unit_not_found(unit_id, config, cfg.units))
    try:
        key = read_key(keydir, unit.id)
    except FileNotFoundError:
        raise KeyMissingError(
            f"no key for {unit.id}: {key_path(keydir, unit.id)} is missing "
            f"(run: campusguard keygen {unit.id} --keydir {keydir})"
        ) from None
    except ValueError as exc:
        raise KeyMissingError(str(exc)) from None
    return UnitToFlash(unit, key, cfg.links[unit.link].baud)


def firmware_files(root: Path = FIRMWARE_DIR) -> list[Path]:
    """The firmware's source files, relative to ``root`` (what goes onto a unit)."""
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*.py")
        if "__pycache__" not in p.parts and p.relative_to(root).as_posix() not in HOST_ONLY
    )


def unit_config(unit: Unit, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The unit's ``unit.json`` content but ``fw_files``: address, pins, timings, kind, role.

    ``overrides`` adds or replaces keys (tests use ``heartbeat_ms`` and the like, which
    ``firmware/startup.py`` reads).
    """
    cfg: dict[str, Any] = {
        "unit": unit.id,
        "addr": unit.addr,
        "role": unit.role,
        "kind": unit.kind,
        "pins": dict(unit.pins),
        "heartbeat_s": unit.heartbeat_s,
        "long_press_ms": unit.long_press_ms,
        "cancel_window_s": unit.cancel_window_s,
        "test_interval_h": unit.test_interval_h,
        "incident_window_s": unit.incident_window_s,
    }
    if overrides:
        cfg.update(overrides)
    return cfg


def mpy_cross(source: Path, target: Path, name: str) -> None:
    """Compile one firmware module to ``.mpy`` (plain bytecode: loads on ESP32 and host).

    ``name`` is the file name tracebacks show: the module's name (``board.virtual``), a
    qstr the unit has anyway; its path (``board/virtual.py``) was one more per module.
    """
    exe = Path(sys.executable).parent / "mpy-cross"
    cmd = [str(exe) if exe.exists() else "mpy-cross", "-s", name, "-o", str(target), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FirmwareBuildError(f"mpy-cross {source}: {result.stderr.strip()}")


def compiled_tree(cache: Path, root: Path = FIRMWARE_DIR) -> Path:
    """A folder with the firmware compiled to ``.mpy`` (``main.py`` stays source).

    Cached in ``cache`` under a hash of the sources, so a fleet compiles once.
    """
    h = hashlib.sha256(b"-s module name")  # how mpy-cross is called: part of the result
    for rel in firmware_files(root):
        h.update(str(rel).encode())
        h.update((root / rel).read_bytes())
    out = cache / f"fw-{h.hexdigest()[:16]}"
    if out.exists():
        return out
    tmp = cache / f"{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for rel in firmware_files(root):
        dst = tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.name in SOURCE_ONLY or rel.name == "__init__.py":
            shutil.copyfile(root / rel, dst)
        else:
            mpy_cross(root / rel, dst.with_suffix(".mpy"), ".".join(rel.with_suffix("").parts))
    with contextlib.suppress(OSError):
        tmp.rename(out)  # another process may have won the race: theirs is the same
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def mpremote_exe() -> str:
    """Path of mpremote: next to ``sys.executable``, else on PATH."""
    beside = Path(sys.executable).parent / "mpremote"
    if beside.exists():
        return str(beside)
    return shutil.which("mpremote") or "mpremote"


def romfs_image(cache: Path, root: Path = FIRMWARE_DIR) -> Path:
    """The firmware's modules as a ROMFS image (``mpremote romfs build``), cached in ``cache``.

    What ``mpremote romfs deploy`` writes to an ESP32's ROMFS partition: every ``.mpy``
    of :func:`compiled_tree`. ``main.py`` stays source on the filesystem, and
    ``board/__init__.py`` (comments only) is left out: ``board`` then imports as a
    namespace package, and no source file is compiled into RAM.
    """
    tree = compiled_tree(cache, root)
    out = cache / f"{tree.name}.romfs"
    if out.exists():
        return out
    src = cache / f"{tree.name}.romfs.{os.getpid()}.d"
    tmp = cache / f"{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(src, ignore_errors=True)
    for p in sorted(tree.rglob("*.mpy")):
        dst = src / p.relative_to(tree)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
    try:
        res = subprocess.run(
            [mpremote_exe(), "romfs", "--no-mpy", "-o", str(tmp), "build", str(src)],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise FirmwareBuildError(f"mpremote romfs build: {res.stderr.strip()}")
        with contextlib.suppress(OSError):
            tmp.rename(out)  # another process may have won the race: theirs is the same
    finally:
        shutil.rmtree(src, ignore_errors=True)
        tmp.unlink(missing_ok=True)
    return out


def unit_firmware(tree: Path, *, bare: bool = False) -> list[str]:
    """The files of ``tree`` (the sources or :func:`compiled_tree`) that go onto a unit.

    ``.py`` and ``.mpy`` files but :data:`HOST_ONLY` and ``__pycache__``, as POSIX paths
    relative to ``tree``. ``bare``: the modules are frozen in or on ROMFS, so only
    :data:`SOURCE_ONLY` (``main.py``) is a file.
    """
    out = []
    for p in sorted(tree.rglob("*")):
        rel = p.relative_to(tree)
        name = rel.as_posix()
        if not p.is_file() or rel.suffix not in (".py", ".mpy") or "__pycache__" in rel.parts:
            continue
        if name in HOST_ONLY or (bare and name not in SOURCE_ONLY):
            continue
        out.append(name)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_key(path: Path, key: bytes) -> None:
    """Write a unit key as hex, mode 0600 from creation (never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_MODE)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), KEY_MODE)  # an existing file keeps its mode through open()
        f.write(key.hex() + "\n")


def write_unit_files(
    out: Path,
    unit: Unit,
    key: bytes,
    tree: Path,
    *,
    bare: bool = False,
    image: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    install_test: bool = True,
) -> dict[str, str]:
    """Fill ``out`` with what the unit's flash must hold; return path -> sha256.

    ``tree``: the firmware (sources, or :func:`compiled_tree`), filtered by
    :func:`unit_firmware` (``bare``: ``main.py`` only). ``image``: a ROMFS image written
    as the file :data:`ROMFS_IMAGE` (a virtual board's ROMFS partition). ``unit.json``
    has :func:`unit_config` with ``overrides`` and ``fw_files`` (the sha256 of every
    firmware file), keys sorted; ``unit.key`` has mode 0600; ``install_test`` writes the
    installation-test marker :data:`INSTALL_TEST_FILE`. Other files in ``out`` (a unit's
    epoch records, its pending outbox) are left alone.
    """
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for rel in unit_firmware(tree, bare=bare):
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tree / rel, dst)
        files[rel] = _sha256(dst)
    if image is not None:
        shutil.copyfile(image, out / ROMFS_IMAGE)
        files[ROMFS_IMAGE] = _sha256(out / ROMFS_IMAGE)
    cfg = unit_config(unit, overrides)
    cfg["fw_files"] = files
    (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    write_key(out / KEY_FILE, key)
    written = [*files, CONFIG_FILE, KEY_FILE]
    if install_test:
        (out / INSTALL_TEST_FILE).write_text("deploy\n")
        written.append(INSTALL_TEST_FILE)
    return {rel: _sha256(out / rel) for rel in written}
