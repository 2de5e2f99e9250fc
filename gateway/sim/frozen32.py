"""The 32-bit MicroPython unix port with asyncio and the firmware frozen in (``make firmware32``).

The ESP32's shape on a host: 32-bit objects (small ints are 31-bit, so a value >= 2**30
is a heap-allocated big int) and the firmware's bytecode and qstrs frozen into the image
(``firmware/manifest_virtual.py``: ``firmware/manifest.py`` with the virtual board in
place of ``board/esp32.py``). Built from the MicroPython source named by ``MICROPY_SRC``
(a source tree, the release archive, or a folder holding the archive; default
``../shared/micropython`` beside the checkout), following the recipe in its README:
mpy-cross first, then the unix port with ``MICROPY_FORCE_32BIT=1`` and
``FROZEN_MANIFEST``. The source is copied into ``build/firmware32/src`` (never built in
place) and the build is kept there, so a firmware change rebuilds in seconds and an
unchanged one not at all.

``python -m gateway.sim.frozen32 [--if-source]``: builds (or finds up to date) and prints
the binary's path. Without a source it prints :data:`SOURCE_HINT` and exits 2; with
``--if-source`` it exits 0 instead, except under ``CI=true`` (CI has the source, so a
missing one is a broken run, not a skip).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from gateway.core.errors import Frozen32BuildError

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = ROOT / "firmware"
MANIFEST = FIRMWARE_DIR / "manifest_virtual.py"
BUILD_DIR = ROOT / "build" / "firmware32"
BINARY = BUILD_DIR / "micropython"
"""The built interpreter (an i386 ELF)."""
DEFAULT_SOURCE = ROOT.parent / "shared" / "micropython"
SOURCE_HINT = (
    "no MicroPython source for the 32-bit frozen build: set MICROPY_SRC to a source tree "
    "or micropython-1.28.0-src.tar.xz (tag v1.28.0 of github.com/micropython/micropython; "
    f"default {DEFAULT_SOURCE})"
)
"""The one line said (and the firmware32 tests skip with) when there is no source."""
MAKE_FLAGS = (
    "MICROPY_FORCE_32BIT=1",
    "MICROPY_PY_BTREE=0",
    "MICROPY_PY_FFI=0",
    "MICROPY_PY_SSL=0",
)
_ARCHIVE_SUFFIXES = (".tar.xz", ".tar.gz", ".tgz", ".tar")


def in_ci(env: Mapping[str, str] = os.environ) -> bool:
    """True under CI (``CI=true``), where a missing MicroPython source is an error."""
    return env.get("CI", "").lower() in ("true", "1", "yes")


def find_source(env: Mapping[str, str] = os.environ) -> Path | None:
    """The MicroPython source to build from (a tree or an archive), or None."""
    given = env.get("MICROPY_SRC")
    path = Path(given).expanduser() if given else DEFAULT_SOURCE
    if path.is_file() and path.name.endswith(_ARCHIVE_SUFFIXES):
        return path.resolve()
    if (path / "py" / "mpconfig.h").is_file():
        return path.resolve()
    if path.is_dir():
        archives = sorted(
            p for p in path.glob("micropython-*") if p.name.endswith(_ARCHIVE_SUFFIXES)
        )
        if archives:
            return archives[-1].resolve()
    return None


def _firmware_inputs() -> list[Path]:
    return sorted(p for p in FIRMWARE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def _source_id(source: Path) -> str:
    st = source.stat()
    return f"{source} {st.st_size} {st.st_mtime_ns}"


def _fingerprint(source: Path) -> str:
    h = hashlib.sha256(_source_id(source).encode())
    h.update(" ".join(MAKE_FLAGS).encode())
    for p in _firmware_inputs():
        h.update(str(p.relative_to(FIRMWARE_DIR)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def up_to_date(source: Path) -> bool:
    """True if :data:`BINARY` was built from ``source`` and today's firmware."""
    stamp = BUILD_DIR / "stamp"
    return BINARY.exists() and stamp.exists() and stamp.read_text() == _fingerprint(source)


def _run(cmd: list[str], log: Path, env: Mapping[str, str]) -> None:
    with log.open("ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        res = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(env), check=False)
    if res.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-1:]
        raise Frozen32BuildError(f"{cmd[0]} {cmd[1:3]} failed ({'; '.join(tail)}): see {log}")


def _unpack(source: Path, src: Path, log: Path) -> None:
    """A fresh copy of the source in ``src``: the shared tree or archive stays untouched."""
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    if source.is_file():
        _run(["tar", "-C", str(src), "-xf", str(source)], log, os.environ)
        entries = list(src.iterdir())
        if len(entries) == 1 and entries[0].is_dir() and not (src / "py").exists():
            # a GitHub tarball has one top folder (micropython-1.28.0/): lift it
            top = entries[0]
            for e in top.iterdir():
                e.rename(src / e.name)
            top.rmdir()
    else:
        shutil.copytree(
            source,
            src,
            dirs_exist_ok=True,
            symlinks=True,
            ignore=shutil.ignore_patterns("build", "build-*", ".git"),
        )
    if not (src / "py" / "mpconfig.h").is_file():
        raise Frozen32BuildError(f"{source}: not a MicroPython source (no py/mpconfig.h)")


def build(source: Path, *, quiet: bool = False) -> Path:
    """Build :data:`BINARY` from ``source`` unless it is up to date; return its path.

    Serialised with a lock file, so parallel test sessions build once.
    """
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with (BUILD_DIR / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if up_to_date(source):
            return BINARY
        started = time.monotonic()
        log = BUILD_DIR / "build.log"
        log.write_text("")
        src = BUILD_DIR / "src"
        id_file = BUILD_DIR / "source"
        if not id_file.exists() or id_file.read_text() != _source_id(source):
            if not quiet:
                print(f"firmware32: unpacking {source}", file=sys.stderr)
            _unpack(source, src, log)
            id_file.write_text(_source_id(source))
        # the build checks for this submodule whenever FROZEN_MANIFEST is set; the
        # manifest needs nothing from it
        (src / "lib" / "micropython-lib").mkdir(parents=True, exist_ok=True)
        (src / "lib" / "micropython-lib" / "README.md").touch()
        env = {k: v for k, v in os.environ.items() if k != "FROZEN_MANIFEST"}
        jobs = f"-j{min(os.cpu_count() or 1, 4)}"
        if not quiet:
            print("firmware32: building mpy-cross and the 32-bit unix port", file=sys.stderr)
        # mpy-cross without FROZEN_MANIFEST in the environment (its link fails with it)
        _run(["make", "-C", str(src / "mpy-cross"), jobs], log, env)
        _run(
            [
                "make",
                "-C",
                str(src / "ports" / "unix"),
                jobs,
                *MAKE_FLAGS,
                f"FROZEN_MANIFEST={MANIFEST}",
            ],
            log,
            env,
        )
        tmp = BINARY.with_name(BINARY.name + ".tmp")
        shutil.copy2(src / "ports" / "unix" / "build-standard" / "micropython", tmp)
        tmp.replace(BINARY)
        (BUILD_DIR / "stamp").write_text(_fingerprint(source))
        if not quiet:
            print(
                f"firmware32: built {BINARY} in {time.monotonic() - started:.0f} s",
                file=sys.stderr,
            )
        return BINARY


def ensure(env: Mapping[str, str] = os.environ) -> Path:
    """The built interpreter, building it if needed; :class:`Frozen32BuildError` if no source."""
    source = find_source(env)
    if source is None:
        raise Frozen32BuildError(SOURCE_HINT)
    return build(source, quiet=True)


def main(argv: list[str] | None = None) -> int:
    """``make firmware32``: build (or find up to date) the 32-bit frozen interpreter."""
    parser = argparse.ArgumentParser(prog="python -m gateway.sim.frozen32", description=__doc__)
    parser.add_argument(
        "--if-source",
        action="store_true",
        help="without a MicroPython source say so and exit 0 (not under CI=true)",
    )
    args = parser.parse_args(argv)
    source = find_source()
    if source is None:
        print(SOURCE_HINT, file=sys.stderr)
        return 0 if args.if_source and not in_ci() else 2
    try:
        path = build(source)
    except (Frozen32BuildError, OSError) as exc:
        print(f"firmware32: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
