"""Mutation testing of the protocol and the gateway's decision code (`make mutation`).

Two mutators, one report:

- mutmut (pinned in pyproject's ``mutation`` extra, configured in ``[tool.mutmut]``) mutates
  the code inside functions and runs only the fast tests that cover each function.
- mutmut skips module-level code (constants, enum members, lookup tables, column lists), so
  :func:`constant_mutants` changes each literal there once (an int + 1, a float doubled, a
  bool negated, a string wrapped in ``XX``) and runs the module's fast tests against it, in
  a copy of the tree.

A survivor that cannot change behaviour is listed in ``bench/mutation_accepted.json`` with a
one-line reason, keyed by what it changes (:func:`accept_key`: the function and the mutated
source lines, not mutmut's number, which shifts whenever a function gains or loses a
mutant); two rules accept the rest of that kind: a mutant
that only changes the text of an exception it raises, and one that only changes the letter
case of SQL (outside quoted values). Log calls are not mutated at all (pyproject). The
score of an area counts only the others: ``(killed + timeout) / (mutants - accepted)``.

Tests marked ``slow`` (``-m "not slow"``) are left out: each stands beside a fast test of the
same code (the duty watch's week ticked every second beside the same week ticked at its
deadlines). ``--only MODULE`` re-tests one module's mutants and keeps the others' results.

Writes ``bench/mutation.json``. Not part of ``make test``: minutes of CPU.

    python bench/mutation.py [--jobs 2] [--json bench/mutation.json] [--reuse] [--only PATH]
        [--survivors]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ACCEPTED = ROOT / "bench" / "mutation_accepted.json"

# the fast tests of each mutated module (mutmut reads the same list from pyproject)
PROTOCOL_TESTS = ["tests/protocol", "tests/firmware/test_codec_micropython.py"]
TESTS: dict[str, list[str]] = {
    "gateway/pipeline/pipeline.py": ["tests/gateway/test_pipeline_decisions.py"],
    "gateway/pipeline/incidents.py": [
        "tests/gateway/test_incidents.py",
        "tests/gateway/test_first_press.py",
    ],
    "gateway/journal/store.py": ["tests/gateway/test_store.py"],
    "gateway/relay/relay.py": ["tests/gateway/test_relay.py"],
    "gateway/watch/duty.py": ["tests/duty/test_duty.py"],
}
GOALS = {"protocol": 0.95, "gateway": 0.90}


ONLY: list[str] = []  # --only: module path prefixes


def modules() -> list[str]:
    """Every mutated module, as a path from the repository root."""
    protocol = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protocol").glob("*.py"))
    every = protocol + list(TESTS)
    return [m for m in every if not ONLY or any(m.startswith(o) for o in ONLY)]


def tests_of(module: str) -> list[str]:
    """The fast tests that guard ``module``."""
    return PROTOCOL_TESTS if module.startswith("protocol/") else TESTS[module]


@dataclass
class Mutant:
    """One mutant and what became of it."""

    name: str
    module: str
    status: str  # killed | survived | timeout
    change: str


# -- mutmut -------------------------------------------------------------------------------


def not_killed(module: str, *, unchecked_only: bool = False) -> list[str] | None:
    """The mutants of ``module`` the last run did not kill (survived, unchecked, no tests).

    None when there was no run: then every mutant of the module is tested. Mutants of a
    function changed since that run are not named yet (mutmut makes them when it runs);
    :func:`run_mutmut` tests them in a second pass, as the then unchecked ones.
    """
    meta = ROOT / "mutants" / f"{module}.meta"
    if not meta.exists():
        return None
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    from mutmut.stats import status_by_exit_code

    if unchecked_only:
        return [k for k, c in codes.items() if c is None]
    return [k for k, c in codes.items() if status_by_exit_code[c] not in ("killed", "timeout")]


def run_mutmut(
    jobs: int, log_path: Path, *, fresh: bool = True, survivors_only: bool = False
) -> None:
    """``mutmut run``, fresh by default (old results would hide a test that changed).

    With ``--only``, every mutant of those modules is tested again (mutmut re-runs the
    mutants it is named) and the other modules' results are kept. With ``survivors_only``
    as well, only the mutants the last run did not kill (tests were added, none weakened:
    a killed mutant stays killed), then any mutants new since (changed functions).
    """
    names: list[str] = []
    for m in modules() if ONLY else []:
        again = not_killed(m) if survivors_only else None
        names += [m.removesuffix(".py").replace("/", ".") + ".*"] if again is None else again
    if fresh and not ONLY:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    mutmut = Path(sys.executable).with_name("mutmut")
    passes = 2 if survivors_only else 1
    with log_path.open("a" if not fresh or ONLY else "w") as log:  # git-ignored, like mutants/
        for n in range(passes):
            if n:
                names = [k for m in modules() for k in not_killed(m, unchecked_only=True) or []]
            if ONLY and not names:
                continue  # nothing (left) to test
            rc = subprocess.call(
                [str(mutmut), "run", "--max-children", str(jobs), *names],
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
            if rc != 0:
                raise SystemExit(f"mutmut run failed (exit {rc}); see {log_path}")


def one_line(diff: str) -> str:
    """The changed lines of a unified diff, joined into one line."""
    lines = [ln.strip() for ln in diff.splitlines()[2:] if ln[:1] in "+-"]
    return " // ".join(lines)[:400]


def mutmut_results() -> Iterator[Mutant]:
    """Every mutmut mutant of the last run, with its status and its change."""
    os.chdir(ROOT)
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    for module in modules():
        meta = ROOT / "mutants" / f"{module}.meta"
        if not meta.exists():
            continue
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            status = status_by_exit_code[code]
            if status in ("killed", "segfault"):
                yield Mutant(name, module, "killed", "")
            elif status == "timeout":
                yield Mutant(name, module, "timeout", "")
            elif status == "not checked":  # an interrupted run: reported apart, not scored
                yield Mutant(name, module, "not_checked", "")
            else:  # survived, no tests, suspicious, skipped, not checked
                change = one_line(get_diff_for_mutant(name, path=module))
                yield Mutant(name, module, "survived", change)


# -- module-level constants ---------------------------------------------------------------


def _module_level_values(tree: ast.Module) -> Iterator[tuple[str, ast.expr]]:
    """(owner name, value) for module and class-level assignments (not docstrings)."""

    def assigned(stmt: ast.stmt, owner: str) -> Iterator[tuple[str, ast.expr]]:
        if isinstance(stmt, ast.Assign) and stmt.value is not None:
            names = [ast.unparse(t) for t in stmt.targets]
            if names != ["__test__"] and names != ["__all__"]:
                yield owner + ",".join(names), stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            name = ast.unparse(stmt.target)
            if name != "__test__":
                yield owner + name, stmt.value

    for stmt in tree.body:
        yield from assigned(stmt, "")
        if isinstance(stmt, ast.ClassDef):
            for inner in stmt.body:
                yield from assigned(inner, stmt.name + ".")


def _mutated_literal(node: ast.Constant) -> str | None:
    v = node.value
    if isinstance(v, bool):
        return repr(not v)
    if isinstance(v, int):
        return repr(v + 1)
    if isinstance(v, float):
        return repr(v * 2 if v else 1.0)
    if isinstance(v, str):
        return repr("XX" + v + "XX")
    return None  # bytes, None, Ellipsis


@dataclass(frozen=True)
class ConstantMutant:
    """One literal of a module-level value, changed."""

    module: str
    name: str
    lineno: int
    col: int
    end_lineno: int
    end_col: int
    old: str
    new: str

    def apply(self, source: str) -> str:
        lines = source.splitlines(keepends=True)
        offsets = [0]
        for ln in lines:
            offsets.append(offsets[-1] + len(ln))
        start = offsets[self.lineno - 1] + self.col
        end = offsets[self.end_lineno - 1] + self.end_col
        # col offsets are in UTF-8 bytes: fine here, our sources keep literals ASCII
        return source[:start] + self.new + source[end:]


def constant_mutants(module: str) -> list[ConstantMutant]:
    """One mutant per literal in the module-level values of ``module``."""
    source = (ROOT / module).read_text()
    out: list[ConstantMutant] = []
    counts: dict[str, int] = {}
    for owner, value in _module_level_values(ast.parse(source)):
        for node in ast.walk(value):
            if not isinstance(node, ast.Constant):
                continue
            new = _mutated_literal(node)
            if new is None or node.end_lineno is None or node.end_col_offset is None:
                continue
            counts[owner] = counts.get(owner, 0) + 1
            out.append(
                ConstantMutant(
                    module,
                    f"{module}:{owner}#{counts[owner]}",
                    node.lineno,
                    node.col_offset,
                    node.end_lineno,
                    node.end_col_offset,
                    ast.get_source_segment(source, node) or repr(node.value),
                    new,
                )
            )
    return out


def _copy_tree(dest: Path) -> Path:
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "mutants", "__pycache__", ".mypy_cache", ".ruff_cache", "*.db*", "var"
    )
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    return dest


def _pytest(tree: Path, tests: list[str], timeout_s: float) -> str:
    """Run ``tests`` in ``tree``: killed, survived or timeout."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
    cmd += tests
    try:
        r = subprocess.run(cmd, cwd=tree, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "survived" if r.returncode == 0 else "killed"


def run_constants(jobs: int, killed: Sequence[Mutant] = ()) -> list[Mutant]:
    """Every constant mutant, ``jobs`` at a time, each worker in its own copy of the tree.

    A mutant in ``killed`` (same name, same change) keeps that result untested.
    """

    def same(name: str, change: str) -> tuple[str, str]:  # a line moved is the same mutant
        return name, change.split(": ", 1)[-1]

    done = {same(m.name, m.change): m for m in killed}
    todo = [m for module in modules() for m in constant_mutants(module)]
    kept = [done[k] for m in todo if (k := same(m.name, _const_change(m))) in done]
    todo = [m for m in todo if same(m.name, _const_change(m)) not in done]
    if not todo:
        return kept
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        trees = [_copy_tree(Path(tmp) / f"w{i}") for i in range(jobs)]
        baseline: dict[str, float] = {}
        for module in modules():  # the unmutated tests must pass, and how long they take
            key = " ".join(tests_of(module))
            if key in baseline:
                continue
            t0 = time.monotonic()
            if _pytest(trees[0], tests_of(module), 1800) != "survived":
                raise SystemExit(f"the tests of {module} fail without a mutant: {key}")
            baseline[key] = time.monotonic() - t0
        free = list(trees)

        def one(m: ConstantMutant) -> Mutant:
            tree = free.pop()
            try:
                path = tree / m.module
                original = path.read_text()
                path.write_text(m.apply(original))
                try:
                    limit = 10 * baseline[" ".join(tests_of(m.module))] + 30
                    status = _pytest(tree, tests_of(m.module), limit)
                finally:
                    path.write_text(original)
            finally:
                free.append(tree)
            return Mutant(m.name, m.module, status, _const_change(m))

        with ThreadPoolExecutor(jobs) as pool:
            return kept + list(pool.map(one, todo))


def _const_change(m: ConstantMutant) -> str:
    return f"line {m.lineno}: {m.old} -> {m.new}"


# -- report -------------------------------------------------------------------------------

# an exception's text: the mutant differs only in the literal inside `raise X(...)`
_RAISE = re.compile(r"^[-+]\s*(raise \w+\(|Reason\.\w+, )")


def text_only(m: Mutant) -> bool:
    """The mutant changes only the message of an exception it raises."""
    parts = m.change.split(" // ")
    if len(parts) != 2 or not all(_RAISE.match(p) or "Reason." in p for p in parts):
        return False
    strip = re.compile(r"f?\"[^\"]*\"|None|str\(\w+\)")

    def skeleton(line: str) -> str:
        text = strip.sub("S", line[1:].strip())
        for a, b in ((", S", ""), ("S, ", ""), ("(S)", "()"), (", )", ")"), (",)", ")")):
            text = text.replace(a, b)
        return text

    return skeleton(parts[0]) == skeleton(parts[1])


# SQLite reads keywords, names and PRAGMA values (WAL, NORMAL, PASSIVE, OFF) in any case
_SQL = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|VALUES|WHERE|FROM|PRAGMA|GROUP BY|ORDER BY|IS (NOT )?NULL)\b",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"'[^']*'")


def sql_case_only(m: Mutant) -> bool:
    """The mutant changes only the letter case of SQL (or a PRAGMA) outside quoted values."""
    parts = m.change.split(" // ")
    if len(parts) != 2 or not all(_SQL.search(p) for p in parts):
        return False
    old, new = (p[1:].strip() for p in parts)
    same_values = _QUOTED.findall(old) == _QUOTED.findall(new)
    return old != new and old.lower() == new.lower() and same_values


def accept_key(m: Mutant) -> str:
    """The key of ``m`` in ``bench/mutation_accepted.json``: where it is and what it changes.

    A mutmut mutant: its function (the name without ``__mutmut_<n>``) and its changed
    lines; a constant mutant: its module-level name and the literal's old and new text.
    Neither shifts when code elsewhere changes. Two mutants of one function with the same
    change (the same line twice) are told apart by their order there (``#2``, ``#3``).
    """
    if "/" in m.name:  # a constant: "<module>:<owner>#<n>", "line <l>: a -> b"
        return f"{m.name.rsplit('#', 1)[0]}: {m.change.split(': ', 1)[-1][:200]}"
    return f"{m.name.rsplit('__mutmut_', 1)[0]}: {m.change}"


def _mutant_no(name: str) -> int:
    tail = name.rsplit("__mutmut_", 1)[-1].rsplit("#", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def accept_keys(mutants: list[Mutant]) -> dict[str, str]:
    """Mutant name -> :func:`accept_key` for every survivor, repeats numbered in order."""
    keys: dict[str, str] = {}
    seen: dict[str, int] = {}
    survivors = sorted(
        (m for m in mutants if m.status == "survived"),
        key=lambda m: (m.name.rsplit("__mutmut_", 1)[0].rsplit("#", 1)[0], _mutant_no(m.name)),
    )
    for m in survivors:
        key = accept_key(m)
        seen[key] = seen.get(key, 0) + 1
        keys[m.name] = key if seen[key] == 1 else f"{key} #{seen[key]}"
    return keys


def report(mutants: list[Mutant]) -> dict[str, Any]:
    """The JSON document of ``bench/mutation.json``."""
    accepted_reasons: dict[str, str] = json.loads(ACCEPTED.read_text()) if ACCEPTED.exists() else {}
    per: dict[str, dict[str, int]] = {}
    area: dict[str, list[int]] = {a: [0, 0] for a in GOALS}  # detected, counted
    survivors: list[dict[str, str]] = []
    accepted: list[dict[str, str]] = []
    not_checked: dict[str, int] = {}
    keys = accept_keys(mutants)
    for m in mutants:
        if m.status == "not_checked":
            not_checked[m.module] = not_checked.get(m.module, 0) + 1
            continue
        row = per.setdefault(m.module, {"mutants": 0, "killed": 0, "survived": 0, "timeout": 0})
        row["mutants"] += 1
        row[m.status] += 1
        a = m.module.split("/")[0]
        if m.status == "survived":
            reason = accepted_reasons.get(keys[m.name])
            if reason is None and text_only(m):
                reason = "text only: the message of an exception; reason and type are unchanged"
            if reason is None and sql_case_only(m):
                reason = "equivalent: SQL keywords and names are case-insensitive"
            entry = {"mutant": m.name, "module": m.module, "change": m.change, "key": keys[m.name]}
            if reason is not None:
                accepted.append({**entry, "reason": reason})
                continue
            survivors.append(entry)
        area[a][1] += 1
        area[a][0] += m.status != "survived"
    mods = [m.removesuffix(".py").replace("/", ".") + "." for m in modules()]
    mine = {
        k
        for k in accepted_reasons
        if k.startswith(tuple(mods)) or (":" in k and k.split(":")[0] in modules())
    }
    stale = sorted(mine - set(keys.values()))
    if ONLY:
        area = {a: v for a, v in area.items() if any(o.startswith(a) for o in ONLY)}
    doc: dict[str, Any] = {
        "tool": tool_name(),
        "modules": per,
        "score": {a: round(d / n, 4) if n else None for a, (d, n) in area.items()},
        "survivors": survivors,
        "accepted": accepted,
        "accepted_but_killed_or_gone": stale,
    }
    if not_checked:  # only after an interrupted run
        doc["not_checked"] = not_checked
    return doc


def tool_name() -> str:
    from importlib.metadata import version

    return f"mutmut {version('mutmut')} + bench/mutation.py module-level constants"


def print_table(doc: dict[str, Any]) -> None:
    print(f"{'module':28} {'mutants':>7} {'killed':>7} {'survived':>8} {'timeout':>7}")
    for module, r in doc["modules"].items():
        print(f"{module:28} {r['mutants']:7} {r['killed']:7} {r['survived']:8} {r['timeout']:7}")
    for a, s in doc["score"].items():
        print(f"score {a}: {s} (goal {GOALS[a]})")
    print(f"accepted survivors: {len(doc['accepted'])}, other survivors: {len(doc['survivors'])}")
    for module, n in doc.get("not_checked", {}).items():
        print(f"NOT CHECKED (interrupted run): {module}: {n} mutants")
    for s in doc["survivors"]:
        print(f"  {s['mutant']}: {s['change']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2, help="tests run in parallel (default 2)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "mutation.json")
    p.add_argument("--reuse", action="store_true", help="report the last run again")
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted mutmut run (keeping its results), then the constants",
    )
    p.add_argument(
        "--no-mutmut",
        action="store_true",
        help="keep mutmut's last results (an interrupted run counts as not checked)",
    )
    p.add_argument("--only", action="append", default=[], help="module path prefix (repeat)")
    p.add_argument(
        "--survivors",
        action="store_true",
        help="with --only: test again only what the last run did not kill (after adding tests)",
    )
    args = p.parse_args()
    if args.survivors and not args.only:
        p.error("--survivors needs --only")
    ONLY[:] = args.only
    cache = ROOT / "mutants" / "constants.json"
    if args.reuse:
        if not cache.exists():
            print("no previous run: run without --reuse first", file=sys.stderr)
            return 2
    else:
        if not args.no_mutmut:
            run_mutmut(
                args.jobs,
                ROOT / "mutants.log",
                fresh=not args.resume,
                survivors_only=args.survivors,
            )
        killed: list[Mutant] = []
        if args.survivors and cache.exists():  # a killed constant stays killed
            old = [Mutant(**d) for d in json.loads(cache.read_text())]
            killed = [m for m in old if m.status in ("killed", "timeout")]
        consts = run_constants(args.jobs, killed)
        if ONLY and cache.exists():  # keep the other modules' results
            done = {m.module for m in consts}
            kept = [d for d in json.loads(cache.read_text()) if d["module"] not in done]
            consts = [Mutant(**d) for d in kept] + consts
        cache.write_text(json.dumps([m.__dict__ for m in consts]))
    mine = set(modules())
    consts = [m for d in json.loads(cache.read_text()) if (m := Mutant(**d)).module in mine]
    doc = report(list(mutmut_results()) + consts)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print_table(doc)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
