"""The firmware's shape: who imports whom, public asyncio only, one reader per record."""

from __future__ import annotations

import ast
from pathlib import Path

from gateway.flashing.unitfiles import FIRMWARE_DIR, HOST_ONLY

MODULES = {
    p.relative_to(FIRMWARE_DIR).as_posix(): ast.parse(p.read_text())
    for p in sorted(FIRMWARE_DIR.rglob("*.py"))
    if p.relative_to(FIRMWARE_DIR).as_posix() not in HOST_ONLY
}


def imports(tree: ast.Module) -> set[str]:
    """Every module a firmware file imports, at any depth (function-level imports too)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_main_wires_startup_and_app_without_a_circle() -> None:
    assert "startup" not in imports(MODULES["app.py"])
    assert "app" in imports(MODULES["startup.py"])
    assert {"app", "startup"} <= imports(MODULES["main.py"])
    # main.py stays source on the unit: no functions or classes (their code would stay
    # in RAM for good)
    assert not [
        n for n in ast.walk(MODULES["main.py"]) if isinstance(n, ast.FunctionDef | ast.ClassDef)
    ]


def test_public_asyncio_only() -> None:
    for name, tree in MODULES.items():
        assert not {m for m in imports(tree) if m.startswith("asyncio.")}, name
        private = [
            n.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute)
            and n.attr in ("_io_queue", "_task_queue", "cur_task", "core")
        ]
        assert not private, (name, private)


def test_each_record_is_read_by_its_writer() -> None:
    """The boot record (epoch.a/b) lives in counter.py, the outbox's file in outbox.py:
    no other module names their files."""
    owners = {"epoch.a": "counter.py", "epoch.b": "counter.py", "outbox.bin": "outbox.py"}
    for name, tree in MODULES.items():
        strings = {
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
        for record, owner in owners.items():
            if record in strings:
                assert name == owner, (record, name)
    assert Path(FIRMWARE_DIR / "board" / "iface.pyi").exists()


# What the firmware may import besides its own modules: MicroPython's built-in modules
# (ESP32 port; ``_thread`` and ``termios`` only in board/virtual.py, the unix port's board).
MICROPYTHON_MODULES = {
    "_thread", "array", "asyncio", "binascii", "collections", "errno", "esp32", "gc",
    "hashlib", "io", "json", "machine", "micropython", "network", "os", "random", "select",
    "struct", "sys", "termios", "time", "uctypes", "vfs",
}  # fmt: skip
ROOT = FIRMWARE_DIR.parent


def test_firmware_imports_nothing_of_the_host() -> None:
    # firmware/ is no package, so import-linter cannot see it (issue 13 item 2)
    own = {p.stem for p in FIRMWARE_DIR.glob("*.py")} | {
        p.name for p in FIRMWARE_DIR.iterdir() if p.is_dir() and p.name != "__pycache__"
    }
    host = {
        p.name
        for p in ROOT.iterdir()
        if p.is_dir() and p.name != "firmware" and any(p.glob("*.py"))
    }
    assert {"gateway", "protocol", "tests"} <= host
    for name in sorted(FIRMWARE_DIR.rglob("*.py")):
        rel = name.relative_to(FIRMWARE_DIR).as_posix()
        tops = {m.split(".")[0] for m in imports(ast.parse(name.read_text()))}
        assert not tops & host, f"firmware/{rel} imports the host's {sorted(tops & host)}"
        strange = tops - own - MICROPYTHON_MODULES
        assert not strange, f"firmware/{rel} imports {sorted(strange)}: not on a unit"
