"""Mutation score of the pure modules: how many small breakages of the code the fast unit tests notice.

    .rig/venv/bin/python bench/mutation.py [module ...] [--label NAME] [--exclude-tests FILE]... [--fail-under 85]

A module is named by its short name (`ports`, `metrics`...) or its path. For each one, a snapshot of
vllm_magics/ and tests/ goes into bench/out/mutation-work/<label>/<name>/ (others may be editing the tree
meanwhile), mutmut (bench/requirements-mutation.txt) mutates that one file and runs only that module's
unit tests against each mutant, niced and one at a time. The report, killed / total per module and
every survivor (file:line and the mutation), goes to bench/out/mutation-<label>-<time>.md. Survivors
described in bench/mutation-equivalents.md are shown as known equivalents, not as test gaps.

What mutmut does not mutate: module-level code (tables, compiled patterns) and decorated functions other
than static/class methods (so not @property bodies). The report lists those functions per module.
Like every bench script this reports rather than fails: exit 1 only when mutmut checked nothing for a
module (a failing test stops it: see the module's mutmut.log) or, with --fail-under PERCENT, when a
module's score without its known equivalents is below that.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
EQUIVALENTS = REPO / "bench" / "mutation-equivalents.md"
# The unit tests only: a real server, kernel or browser per mutant would take hours.
FAST = "not server and not kernel and not browser"


@dataclass(frozen=True)
class Target:
    name: str
    path: str  # the file mutated
    tests: tuple[str, ...]  # its unit tests
    functions: tuple[str, ...] = ()  # only these functions of the file (all when empty)
    pytest_args: tuple[str, ...] = ()  # narrower selection within the test files


TARGETS = [
    Target("ports", "vllm_magics/server/ports.py", ("tests/test_ports.py",)),
    Target("metrics", "vllm_magics/status/metrics.py", ("tests/test_status.py", "tests/test_metrics.py")),
    Target("progress", "vllm_magics/server/progress.py", ("tests/test_progress.py", "tests/test_progress_lines.py")),
    Target("redact", "vllm_magics/redact.py", ("tests/test_redact.py", "tests/test_plan.py")),
    Target("plan", "vllm_magics/server/plan.py",
           ("tests/test_plan.py", "tests/test_plan_secrets.py", "tests/test_plan_lora.py")),
    Target("reasoning", "vllm_magics/ask/reasoning.py",
           ("tests/test_reasoning.py", "tests/test_reasoning_edges.py")),
    Target("markdown", "vllm_magics/notebook/views/markdown.py",
           ("tests/test_markdown.py", "tests/test_markdown_exact.py")),
    # This test reads diagnose.py's imports, which mutmut's instrumented copy changes (it imports mutmut).
    Target("diagnose", "vllm_magics/server/diagnose.py", ("tests/test_diagnose.py",),
           pytest_args=("--deselect", "tests/test_diagnose.py::test_standalone_import_is_stdlib_only")),
    # The rule table is module-level data (not mutated); its fix and evidence helpers are functions.
    Target("diagnose_rules", "vllm_magics/server/diagnose_rules.py", ("tests/test_diagnose.py",),
           pytest_args=("--deselect", "tests/test_diagnose.py::test_standalone_import_is_stdlib_only")),
    # The template tests only: the rest of the file (a chat server, threads) stalls mutmut's coverage pass.
    Target("templating", "vllm_magics/ask/prompt.py", ("tests/test_ask_unit.py", "tests/test_prompt_template.py"),
           ("PromptTemplate.__init__", "PromptTemplate.missing", "PromptTemplate.render", "render_prompt"),
           pytest_args=("-k", "template or undefined_name or braces or raw_blocks")),
]
CAUGHT = {"killed", "timeout", "segfault"}
PLACEHOLDER = "tests/test_mutation_placeholder.py"  # written into a snapshot whose module has no test file


@dataclass
class Mutant:
    key: str
    status: str
    function: str = ""  # qualified name in the original file
    line: int | None = None
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    equivalent: str | None = None  # the reason, when bench/mutation-equivalents.md lists it


# -- running mutmut ------------------------------------------------------------------------------

def prepare(target: Target, work: Path, tests: list[str]) -> None:
    if work.exists():
        shutil.rmtree(work)  # a fresh run each time: mutmut's cache would keep results of older tests
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", "*.pyc")
    shutil.copytree(REPO / "vllm_magics", work / "vllm_magics", ignore=ignore)
    shutil.copytree(REPO / "tests", work / "tests", ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", work / "pyproject.toml")  # pytest's markers and options
    if not tests:  # no unit test at all: an empty selection would run the whole suite instead
        tests = [PLACEHOLDER]
        (work / PLACEHOLDER).write_text("def test_placeholder_touches_nothing():\n    pass\n")
    lines = ["[mutmut]", "source_paths = vllm_magics", f"only_mutate = {target.path}",
             "pytest_add_cli_args_test_selection =", *(f"    {t}" for t in tests),
             "pytest_add_cli_args =", "    -p", "    no:cacheprovider", "    -m", f"    {FAST}",
             *(f"    {a}" for a in target.pytest_args),
             "use_git_change_detection = false"]
    (work / "setup.cfg").write_text("\n".join(lines) + "\n")


def run_mutmut(target: Target, work: Path) -> float:
    module = target.path[:-3].replace("/", ".")
    patterns = [f"{module}.{generated_name(f)}__mutmut_*" for f in target.functions]
    cmd = ["nice", "-n", "10", sys.executable, "-m", "mutmut", "run", "--max-children", "1", *patterns]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    started = time.monotonic()
    with open(work / "mutmut.log", "w") as log:
        subprocess.run(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    return time.monotonic() - started


def status_of(exit_code) -> str:
    from mutmut.stats import status_by_exit_code  # the tool's own reading of its exit codes

    return status_by_exit_code[exit_code]


# -- reading the results -------------------------------------------------------------------------

def _functions(tree: ast.AST) -> dict[str, ast.FunctionDef]:
    """Functions and methods by their own names (mutmut's generated names in its mutated file)."""
    found = {}
    for node in tree.body:
        for item in node.body if isinstance(node, ast.ClassDef) else [node]:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found[(node.name + "." if item is not node else "") + item.name] = item
    return found


def generated_name(function: str) -> str:
    """`name` -> `x_name`, `Class.name` -> `xǁClassǁname` (how mutmut names a function's mutants)."""
    return f"xǁ{function.replace('.', 'ǁ')}" if "." in function else f"x_{function}"


def qualname(generated: str) -> str:
    """`x_name` -> `name`, `xǁClassǁname` -> `Class.name` (mutmut's generated-name prefixes)."""
    return generated[2:] if generated.startswith("x_") else generated[1:].strip("ǁ").replace("ǁ", ".")


def describe(mutant: Mutant, mutated_lines: list[str], mutated_defs: dict, original_defs: dict) -> None:
    """Fills in the function, the line in the snapshot and the changed lines of one mutant."""
    generated = mutant.key.rsplit(".", 1)[-1]
    base = generated.rsplit("__mutmut_", 1)[0]
    mutant.function = qualname(base)
    owner = mutant.function.rsplit(".", 1)[0] + "." if "." in mutant.function else ""
    orig, mut = mutated_defs.get(owner + base + "__mutmut_orig"), mutated_defs.get(owner + generated)
    if orig is None or mut is None:
        return
    source_node = original_defs.get(mutant.function)
    short = mutant.function.rsplit(".", 1)[-1]
    a = textwrap.dedent("\n".join(mutated_lines[orig.lineno - 1:orig.end_lineno])).splitlines()
    b = textwrap.dedent("\n".join(mutated_lines[mut.lineno - 1:mut.end_lineno])).splitlines()
    a[:1] = [a[0].replace(base + "__mutmut_orig", short)] if a else []
    b[:1] = [b[0].replace(generated, short)] if b else []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        mutant.removed += a[i1:i2]
        mutant.added += b[j1:j2]
        if mutant.line is None and source_node is not None:
            mutant.line = source_node.lineno + i1


def collect(target: Target, work: Path) -> list[Mutant]:
    meta = work / "mutants" / (target.path + ".meta")
    if not meta.exists():
        return []
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    mutated_source = (work / "mutants" / target.path).read_text()
    mutated_defs, mutated_lines = _functions(ast.parse(mutated_source)), mutated_source.splitlines()
    original_defs = _functions(ast.parse((work / target.path).read_text()))
    wanted = set(target.functions)
    mutants = []
    for key, code in codes.items():
        generated = key.rsplit(".", 1)[-1]
        if wanted and qualname(generated.rsplit("__mutmut_", 1)[0]) not in wanted:
            continue
        m = Mutant(key, status_of(code))
        describe(m, mutated_lines, mutated_defs, original_defs)
        mutants.append(m)
    return mutants


def ran_tests(work: Path) -> list[str]:
    """The test files a run selected, from the mutmut settings written into its snapshot."""
    cfg = work / "setup.cfg"
    if not cfg.exists():
        return []
    block = cfg.read_text().split("pytest_add_cli_args_test_selection =\n", 1)[-1].split("pytest_add_cli_args =")[0]
    return [ln.strip() for ln in block.splitlines() if ln.strip()]


def not_mutated(target: Target, work: Path) -> list[str]:
    """Functions mutmut leaves alone: decorated ones (a @property body, for instance)."""
    tree = ast.parse((work / target.path).read_text())
    skipped = []
    for name, node in _functions(tree).items():
        decorators = [d.id for d in node.decorator_list if isinstance(d, ast.Name)]
        if node.decorator_list and decorators not in (["staticmethod"], ["classmethod"]):
            skipped.append(name)
    return skipped


# -- known equivalent mutants --------------------------------------------------------------------

_ENTRY = re.compile(r"^## (?P<path>\S+): (?P<function>\S+)\n+```diff\n(?P<diff>.*?)```\n+(?P<why>.*?)(?=\n## |\Z)",
                    re.M | re.S)


def _norm(lines) -> tuple[str, ...]:
    return tuple(" ".join(ln.split()) for ln in lines)


def load_equivalents(path: Path = EQUIVALENTS) -> dict[tuple, str]:
    """(file, function, removed lines, added lines) -> why the mutant cannot change behaviour."""
    if not path.exists():
        return {}
    known = {}
    for m in _ENTRY.finditer(path.read_text()):
        diff = m["diff"].splitlines()
        removed = _norm(ln[1:] for ln in diff if ln.startswith("-"))
        added = _norm(ln[1:] for ln in diff if ln.startswith("+"))
        known[(m["path"], m["function"], removed, added)] = " ".join(m["why"].split())
    return known


def mark_equivalents(target: Target, mutants: list[Mutant], known: dict[tuple, str]) -> None:
    for m in mutants:
        if m.status not in CAUGHT:
            m.equivalent = known.get((target.path, m.function, _norm(m.removed), _norm(m.added)))


# -- the report ----------------------------------------------------------------------------------

def summary_line(name: str, mutants: list[Mutant], seconds: float | None, at: str | None) -> str:
    total = len(mutants)
    caught = sum(m.status in CAUGHT for m in mutants)
    equivalent = sum(m.equivalent is not None for m in mutants)
    score = 100 * caught / total if total else 0.0
    honest = 100 * caught / (total - equivalent) if total - equivalent else 100.0
    return (f"{name:<14} killed {caught:>4} / {total:<4} = {score:5.1f}%   known equivalents {equivalent:>3}"
            f"   killed / (total - equivalents) = {honest:5.1f}%   "
            f"({'?' if seconds is None else f'{seconds:.0f}'} s, started {at or '?'})")


def score_without_equivalents(mutants: list[Mutant]) -> float:
    live = [m for m in mutants if m.equivalent is None]
    return 100 * sum(m.status in CAUGHT for m in live) / len(live) if live else 100.0


def module_section(target: Target, mutants: list[Mutant], skipped: list[str], tests: list[str]) -> list[str]:
    named = "none (no unit test file for this module)" if tests in ([], [PLACEHOLDER]) else " ".join(tests)
    lines = [f"## {target.name}: {target.path}", "", f"Tests: {named}"]
    if target.functions:
        lines.append(f"Functions mutated: {', '.join(target.functions)}")
    if skipped:
        lines.append(f"Not mutated by mutmut (decorated): {', '.join(skipped)}")
    by_status: dict[str, int] = {}
    for m in mutants:
        by_status[m.status] = by_status.get(m.status, 0) + 1
    lines += [f"Results: {json.dumps(by_status, sort_keys=True)}", ""]
    for title, group in (("Survivors", [m for m in mutants if m.status not in CAUGHT and not m.equivalent]),
                         ("Known equivalents", [m for m in mutants if m.equivalent])):
        if not group:
            continue
        lines += [f"### {title} ({len(group)})", ""]
        for m in sorted(group, key=lambda m: (m.line or 0, m.key)):
            lines.append(f"- {target.path}:{m.line} `{m.function}` ({m.status}, {m.key.rsplit('.', 1)[-1]})")
            lines += [f"      - {ln.strip()}" for ln in m.removed] + [f"      + {ln.strip()}" for ln in m.added]
            if m.equivalent:
                lines.append(f"      why equivalent: {m.equivalent}")
        lines.append("")
    return lines


def resolve(names: list[str]) -> list[Target]:
    if not names:
        return TARGETS
    chosen = []
    for name in names:
        match = [t for t in TARGETS if name in (t.name, t.path)]
        if not match:
            raise SystemExit(f"unknown module {name!r}: one of {', '.join(t.name for t in TARGETS)}")
        chosen += match
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="short names or paths (default: all)")
    parser.add_argument("--label", default="run", help="part of the report's file name")
    parser.add_argument("--exclude-tests", action="append", default=[], metavar="FILE",
                        help="leave this test file out, once per file (the 'before' figures: without the tests "
                             "added since)")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the last run's results with this label, without running")
    parser.add_argument("--fail-under", type=float, default=None,
                        help="exit 1 when a module's score without known equivalents is below this percent")
    args = parser.parse_args(argv)
    known = load_equivalents()
    stamp = time.strftime("%Y-%m-%d %H:%M %Z")
    OUT.mkdir(parents=True, exist_ok=True)
    report = OUT / f"mutation-{args.label}-{time.strftime('%Y%m%d-%H%M%S')}.md"
    summary, sections, broken, below = [], [], [], []
    for target in resolve(args.modules):
        tests = [t for t in target.tests if (REPO / t).exists() and t not in args.exclude_tests]
        missing = sorted(set(target.tests) - set(tests))
        if missing:
            print(f"[mutation] {target.name}: without {', '.join(missing)} (not in this tree, or new)", file=sys.stderr)
        work = OUT / "mutation-work" / args.label / target.name
        if args.report_only and not work.exists():
            print(f"[mutation] {target.name}: no run labelled {args.label!r} to report", file=sys.stderr)
            continue
        if not args.report_only:
            prepare(target, work, tests)
            started = time.strftime("%Y-%m-%d %H:%M %Z")
            run = {"seconds": run_mutmut(target, work), "at": started}
            (work / "run.json").write_text(json.dumps(run))
        run = json.loads((work / "run.json").read_text()) if (work / "run.json").exists() else {}
        tests = ran_tests(work)
        mutants = collect(target, work)
        if tests == [PLACEHOLDER]:  # no test file: mutmut stops before checking any mutant
            for m in mutants:
                m.status = "no tests"
        elif not mutants or all(m.status == "not checked" for m in mutants):
            print(f"[mutation] {target.name}: mutmut checked nothing (a failing test?), see {work / 'mutmut.log'}",
                  file=sys.stderr)
            broken.append(target.name)
        mark_equivalents(target, mutants, known)
        line = summary_line(target.name, mutants, run.get("seconds"), run.get("at"))
        print(line, flush=True)
        summary.append(line)
        sections += module_section(target, mutants, not_mutated(target, work), tests)
        if args.fail_under is not None and score_without_equivalents(mutants) < args.fail_under:
            below.append(target.name)
    head = [f"# Mutation report ({args.label}), {stamp}", "",
            f"mutmut {_mutmut_version()}, Python {sys.version.split()[0]}, unit tests selected with -m '{FAST}'"
            + (f", without {' '.join(args.exclude_tests)}." if args.exclude_tests else "."),
            "A mutant is killed when a test fails (or times out) with it in place.", "", "```", *summary, "```", ""]
    report.write_text("\n".join(head + sections) + "\n")
    print(f"[mutation] report: {report.relative_to(REPO)}")
    if below:
        print(f"[mutation] below {args.fail_under}% without known equivalents: {', '.join(below)}")
    return 1 if broken or below else 0


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


if __name__ == "__main__":
    sys.exit(main())
