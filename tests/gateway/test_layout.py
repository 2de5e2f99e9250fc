"""The rooms' import rules (issue 13 item 2): what ``lint-imports`` (pyproject's contracts,
run by ``make lint``) cannot see, because the import is made at run time."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from gateway.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[2]


def _dynamic_imports(tree: ast.Module) -> list[int]:
    """Lines of calls ``importlib.import_module(...)``, ``import_module(...)``,
    ``__import__(...)``."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name in {"import_module", "__import__"}:
            lines.append(node.lineno)
    return lines


def test_only_the_cli_imports_at_run_time() -> None:
    # the cli may import every room, so its one run-time import breaks no contract; one
    # anywhere else would be an edge import-linter never sees
    found = {
        path.relative_to(ROOT).as_posix(): lines
        for path in sorted((ROOT / "gateway").rglob("*.py"))
        if (lines := _dynamic_imports(ast.parse(path.read_text())))
    }
    assert list(found) == ["gateway/cli/main.py"], found


def test_every_subcommand_is_a_module_the_cli_may_import() -> None:
    for name, (module_name, _help) in COMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.run), name
        # issue 13 item 1: a subcommand is a thin wrapper in the cli (its parser, its exit
        # status); what it does lives in its room (dutyroom, flashing, sim, ...)
        assert module_name.startswith("gateway.cli."), (name, module_name)


def test_only_the_cli_parses_command_lines() -> None:
    # a room takes typed options (a dataclass, parameters), never an argparse Namespace;
    # frozen32 is a build step with its own `python -m` entry, not a subcommand
    outside = {
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "gateway").rglob("*.py"))
        if "argparse" in _imported(ast.parse(path.read_text()))
    } - {"gateway/sim/frozen32.py"}
    assert {p for p in outside if not p.startswith("gateway/cli/")} == set()


def _imported(tree: ast.Module) -> set[str]:
    """Top-level names of every module ``tree`` imports."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_exception_class_is_in_the_errors_module() -> None:
    # issue 13 item 5: one place to read what the gateway raises (a private control-flow
    # signal, like the relay's _Stopped, may stay beside its one user)
    misplaced = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and name != "gateway.core.errors"
                and not attr.startswith("_")
            ):
                misplaced.append(f"{name}.{attr}")
    assert misplaced == []
