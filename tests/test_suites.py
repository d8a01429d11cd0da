"""`make test`'s runner (tests/suites.py): the tests it runs beside the NAT lab stay on virtual
time, and every run's failure, or a run that never started, fails the whole."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.suites import LAB, PURE_SKIPS, ROOT, VIRTUAL, Beside, Outcome, Run

# What a test on virtual time must not use: it runs at the lowest priority beside the NAT lab,
# where a wall-clock wait, a socket or a process could be starved for seconds.
REAL_TIME = frozenset({"asyncio", "uvloop", "socket", "selectors", "subprocess", "signal",
                       "threading", "multiprocessing", "time"})


def imported(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


def source_of(module: str) -> Path | None:
    """The file of a module of tests/ or lab/ (the helpers a test imports), else None."""
    if module.split(".")[0] not in ("tests", "lab"):
        return None
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def test_the_runs_name_existing_paths() -> None:
    missing = [p for p in (*LAB, *VIRTUAL, *PURE_SKIPS) if not (ROOT / p).exists()]
    assert missing == []


def test_tests_on_virtual_time_use_no_clock_socket_or_process() -> None:
    files = sorted(f for d in VIRTUAL for f in (ROOT / d).rglob("*.py"))
    assert len(files) > 30
    offences = []
    for path in files:
        helpers = [h for m in imported(path) if (h := source_of(m)) is not None]
        for source in (path, *helpers):
            used = {m for m in imported(source) if m.split(".")[0] in REAL_TIME}
            if used:
                via = "" if source == path else f" through {source.relative_to(ROOT)}"
                offences.append(f"{path.relative_to(ROOT)}{via}: {', '.join(sorted(used))}")
    assert not offences, ("tests run beside the NAT lab at the lowest priority use real time; "
                          "move them out of tests/suites.py's VIRTUAL:\n" + "\n".join(offences))


def test_every_run_beside_the_lab_is_accounted_for(tmp_path: Path) -> None:
    (tmp_path / "test_good.py").write_text("def test_good() -> None:\n    assert True\n")
    (tmp_path / "test_bad.py").write_text("def test_bad() -> None:\n    assert False\n")
    runs = [Run("good", (str(tmp_path / "test_good.py"),)),
            Run("bad", (str(tmp_path / "test_bad.py"),))]
    beside = Beside(runs, ["-q", "-p", "no:cacheprovider"], tmp_path / "beside.log")
    beside.thread.start()
    good, bad = beside.join()
    assert (good.label, good.status, bad.label, bad.status) == ("good", 0, "bad", 1)
    log = (tmp_path / "beside.log").read_text()
    assert "=== good ===" in log and "1 failed" in log

    # Stopped before it ran anything: both runs count as failed, none is left running.
    stopped = Beside(runs, [], tmp_path / "stopped.log")
    stopped.stop()
    stopped.thread.start()
    assert [o.status for o in stopped.join()] == [-1, -1]


@pytest.mark.parametrize(("status", "filtered", "passed"), [
    (0, False, True), (1, False, False), (5, False, False), (5, True, True), (-1, True, False)])
def test_a_run_passes_only_with_tests_that_passed(status: int, filtered: bool,
                                                  passed: bool) -> None:
    """pytest's 5 (nothing collected) fails, unless the caller's -k or path chose the tests."""
    assert Outcome("run", status, 1.0).passed(filtered) is passed
