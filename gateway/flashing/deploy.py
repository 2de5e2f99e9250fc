"""Put the firmware, config and key on a unit (``campusguard deploy``, gateway/cli/deploy.py).

Steps: read the unit from boards.yaml and its key from the key directory; compile the
firmware with mpy-cross (``main.py`` stays source); write ``unit.json`` (address, role,
kind, pins, timings, and the sha256 of every firmware file), ``unit.key`` and the
installation-test marker ``install.test`` (the unit sends TEST kind 1, Contact ID 601,
at its first boot and removes the marker once the gateway ACKed it); copy all of it
with mpremote; check every file on the unit with ``mpremote fs sha256sum``; restart.

``--config-only`` is for an ESP32 whose MicroPython image has the firmware frozen in
(``firmware/manifest.py``) or on its ROMFS partition (``mpremote romfs deploy``): only
``main.py``, ``unit.json``, ``unit.key`` and the marker are written, and firmware modules
left on the filesystem are removed (they would shadow the frozen ones).

``--romfs`` puts the modules on the ROMFS partition and then deploys as
``--config-only``: on an ESP32 with a ROMFS partition (MicroPython 1.25+) it runs
``mpremote romfs deploy IMAGE`` (the image of :func:`gateway.flashing.unitfiles.romfs_image`); on a
virtual board (``--unix-port``) the image is copied as the file ``romfs.img`` (verified
like the others), which :class:`gateway.sim.vboard.VirtualUnit` maps and mounts at ``/rom``.

On a real ESP32 the restart is ``mpremote reset``. For a virtual board (the MicroPython
unix port with its REPL on a pty, ``--unix-port``) every mpremote command chain starts
with ``resume`` (else mpremote soft-resets and the unix process exits) and ``reset``
does nothing: the harness restarts the unit's process (``VirtualUnit.restart()``).
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gateway.core.config import Unit
from gateway.core.errors import DeployError, LinkError
from gateway.flashing.unitfiles import (
    FIRMWARE_DIR,
    SOURCE_ONLY,
    compiled_tree,
    firmware_files,
    romfs_image,
    write_unit_files,
)

log = logging.getLogger(__name__)

MPREMOTE_TIMEOUT_S = 120.0


def stage(
    unit: Unit,
    key: bytes,
    out: Path,
    cache: Path,
    code: bool = True,
    image: Path | None = None,
    baud: int | None = None,
) -> dict[str, str]:
    """Fill ``out`` with what the unit's flash must hold; return path -> sha256.

    ``code=False``: the modules are frozen or on ROMFS; only ``main.py`` is staged.
    ``image``: a ROMFS image staged as the file :data:`ROMFS_IMAGE` (a virtual board).
    """
    return write_unit_files(
        out,
        unit,
        key,
        compiled_tree(cache),
        bare=not code,
        image=image,
        overrides=None if baud is None else {"baud": baud},
        install_test=True,
    )


class Mpremote:
    """Runs mpremote command chains against one port."""

    def __init__(self, exe: str, port: str, unix_port: bool) -> None:
        """``unix_port`` adds ``resume`` to every chain."""
        self.exe = exe
        self.port = port
        self.unix_port = unix_port

    def run(self, *chain: Sequence[str]) -> str:
        """Run commands joined with ``+``; return stdout or raise :class:`DeployError`."""
        cmd = [self.exe, "connect", self.port]
        if self.unix_port:
            cmd.append("resume")
        for i, part in enumerate(chain):
            if i or self.unix_port:
                cmd.append("+")
            cmd.extend(part)
        log.debug("running %s", " ".join(cmd))
        try:
            res = subprocess.run(
                cmd, capture_output=True, text=True, timeout=MPREMOTE_TIMEOUT_S, check=False
            )
        except FileNotFoundError:
            raise DeployError(f"mpremote not found ({self.exe})") from None
        except subprocess.TimeoutExpired:
            raise LinkError(f"{self.port}: no answer within {MPREMOTE_TIMEOUT_S:.0f} s") from None
        if res.returncode != 0:
            text = (res.stderr or res.stdout).strip().splitlines()
            detail = text[-1] if text else f"exit status {res.returncode}"
            if "failed to access" in detail or "could not" in detail.lower():
                raise LinkError(f"cannot reach {self.port}: {detail}")
            raise DeployError(f"mpremote failed on {self.port}: {detail}")
        return res.stdout


def _module_files() -> list[str]:
    """Every path a firmware module may have on a unit (.py and .mpy), but main.py."""
    out = []
    for rel in firmware_files(FIRMWARE_DIR):
        p = rel.as_posix()
        if p not in SOURCE_ONLY:
            out += [p, p[:-3] + ".mpy"]
    return out


def _cleanup_script(paths: Sequence[str], extra: Sequence[str] = ()) -> str:
    """MicroPython code: make the folders, remove the twin of each file (.py vs .mpy).

    ``extra``: files to remove as well, and then their folders if empty (a ``board``
    folder left on the filesystem would hide the frozen ``board`` package).
    """
    dirs = sorted({str(Path(p).parent) for p in paths if "/" in p})
    gone_dirs = sorted({str(Path(p).parent) for p in extra if "/" in p} - set(dirs))
    twins = list(extra)
    for p in paths:
        if p.endswith(".mpy"):
            twins.append(p[:-4] + ".py")
        elif p.endswith(".py") and Path(p).name not in ("main.py", "__init__.py"):
            twins.append(p[:-3] + ".mpy")
    return (
        "import os\n"
        f"for d in {dirs!r}:\n"
        "    try:\n        os.mkdir(d)\n    except OSError:\n        pass\n"
        f"for f in {twins!r}:\n"
        "    try:\n        os.remove(f)\n    except OSError:\n        pass\n"
        f"for d in {gone_dirs!r}:\n"
        "    try:\n        os.rmdir(d)\n    except OSError:\n        pass\n"
    )


def _parse_sha(out: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    current: str | None = None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("sha256sum :"):
            current = line[len("sha256sum :") :]
        elif current is not None and len(line) == 64:
            sums[current] = line
            current = None
    return sums


def deploy(
    unit: Unit,
    key: bytes,
    mp: Mpremote,
    cache: Path | None = None,
    code: bool = True,
    romfs: bool = False,
    baud: int | None = None,
) -> dict[str, str]:
    """Stage, copy, verify and restart one unit; return the verified path -> sha256.

    ``baud``: its link's speed (boards.yaml), which the unit's UART must use.

    ``code=False`` (``--config-only``): the firmware is frozen or on ROMFS.
    ``romfs``: write the modules' ROMFS image first (then as ``code=False``).
    """
    with tempfile.TemporaryDirectory(prefix="campusguard-deploy-") as tmp:
        staging = Path(tmp) / "unit"
        image = romfs_image(cache or Path(tmp)) if romfs else None
        if image is not None and not mp.unix_port:
            mp.run(["romfs", "deploy", str(image)])
        code = code and not romfs
        virtual_image = image if mp.unix_port else None
        expected = stage(unit, key, staging, cache or Path(tmp), code, virtual_image, baud)
        paths = sorted(expected)
        mp.run(["exec", _cleanup_script(paths, () if code else _module_files())])
        mp.run(*(["fs", "cp", str(staging / p), f":{p}"] for p in paths))
    got = _parse_sha(mp.run(["fs", "sha256sum", *(f":{p}" for p in paths)]))
    bad = [p for p in paths if got.get(p) != expected[p]]
    if bad:
        raise DeployError(f"checksum mismatch on the unit for: {', '.join(bad)}")
    if not mp.unix_port:
        mp.run(["reset"])
    return expected
