"""Run the fuzz targets: a bounded, seeded run in CI; `make fuzz SECONDS=N` for as long as asked.

    python -m tests.fuzz.runner --seconds 60                 # every target, a random seed
    python -m tests.fuzz.runner --seconds 60 --seed 7 --target channel-frames
    python -m tests.fuzz.runner --reproduce tests/fuzz/crashes/channel-frames-1a2b3c4d5e6f.bin
    python -m tests.fuzz.runner --list

Each target gets an equal share of the time. Inputs are its seeds and their mutants
(`mutate.py`); a seed reproduces a run input for input (a run by time stops at a different input
on a faster machine, a run by `iterations` does not). An input whose check raises is a crash: it
is written to `tests/fuzz/crashes/<target>-<sha256 prefix>.bin` with the command that reproduces
it; so is an input that takes longer than `SLOW_INPUT`. Checked in, the file becomes a regression
test: `test_fuzz.py` replays every file there.
Exit status: 0 without crashes, 1 with, 2 for a usage mistake.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz.mutate import mutate
from tests.fuzz.target import Check, Target
from tests.fuzz.targets import TARGETS

CRASH_DIR = Path(__file__).resolve().parent / "crashes"
#: seconds; a longer input is reported as a crash by `make fuzz` (not in CI, where a loaded
#: machine could make a fast parser look slow)
SLOW_INPUT = 2.0


@dataclass(frozen=True, slots=True)
class Crash:
    target: str
    data: bytes
    error: str  # the exception's type and message
    trace: str

    @property
    def filename(self) -> str:
        return f"{self.target}-{hashlib.sha256(self.data).hexdigest()[:12]}.bin"


@dataclass(frozen=True, slots=True)
class RunResult:
    target: str
    inputs: int
    crashes: list[Crash]


def execute(
    target: Target, check: Check, data: bytes, slow_after: float | None = None
) -> Crash | None:
    """Run one input; a crash is any exception out of the check (which catches the parser's
    documented error itself), so this catches them all by design. With `slow_after`, an input
    that takes longer than that many seconds is a crash too (a parser an attacker can stall)."""
    start = time.monotonic()
    try:
        check(data)
    except Exception as error:  # noqa: BLE001 - finding undocumented exceptions is the point
        return Crash(target.name, data, f"{type(error).__name__}: {error}", traceback.format_exc())
    took = time.monotonic() - start
    if slow_after is not None and took > slow_after:
        return Crash(target.name, data, f"slow input: {took:.1f} s", "")
    return None


def fuzz(
    target: Target,
    seed: int,
    *,
    iterations: int | None = None,
    seconds: float | None = None,
    max_crashes: int = 5,
    slow_after: float | None = None,
) -> RunResult:
    """Seeds first, then mutants until `iterations` inputs or `seconds` have passed."""
    rng = random.Random(f"{target.name}:{seed}")
    check, seeds = target.setup()
    corpus = [s[: target.max_size] for s in seeds] or [b""]
    crashes: list[Crash] = []
    seen: set[str] = set()  # one crash per distinct error, not thousands of the same
    deadline = None if seconds is None else time.monotonic() + seconds
    count = 0

    def record(crash: Crash | None) -> None:
        if crash is not None and crash.error not in seen:
            seen.add(crash.error)
            crashes.append(crash)

    for data in corpus:
        record(execute(target, check, data, slow_after))
        count += 1
    while len(crashes) < max_crashes:
        if iterations is not None and count >= iterations:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        data = mutate(rng.choice(corpus), rng, corpus, target.max_size)
        record(execute(target, check, data, slow_after))
        count += 1
    return RunResult(target.name, count, crashes)


def save(crash: Crash, directory: Path = CRASH_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / crash.filename
    path.write_bytes(crash.data)
    return path


def by_name(name: str, targets: Sequence[Target] = TARGETS) -> Target:
    """The target called `name`; KeyError if there is none."""
    for target in targets:
        if target.name == name:
            return target
    raise KeyError(name)


def reproduce(path: Path, targets: Sequence[Target] = TARGETS) -> Crash | None:
    """Replay one saved input against its target (the file name starts with the target's)."""
    target = by_name(path.stem.rsplit("-", 1)[0], targets)
    check, _ = target.setup()
    return execute(target, check, path.read_bytes())


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None, targets: Sequence[Target] = TARGETS) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="total time (default 60)")
    parser.add_argument("--seed", type=int, help="repeat a run (default: a random seed)")
    parser.add_argument("--target", action="append", default=[], help="only this target")
    parser.add_argument("--reproduce", type=Path, nargs="+", help="replay saved inputs")
    parser.add_argument("--list", action="store_true", help="list the targets")
    parser.add_argument("--crash-dir", type=Path, default=CRASH_DIR,
                        help="where crashing inputs go (default tests/fuzz/crashes)")
    args = parser.parse_args(argv)
    # the parsers log what they drop (a peer's protocol error is a WARNING): noise here
    logging.disable(logging.CRITICAL)
    if args.list:
        for target in targets:
            print(target.name)
        return 0
    if args.reproduce:
        return _reproduce(args.reproduce, targets)
    try:
        chosen = [by_name(name, targets) for name in args.target] if args.target else targets
    except KeyError as error:
        parser.error(f"no fuzz target {error}; `--list` shows them")
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    share = args.seconds / len(chosen)
    print(f"fuzzing {len(chosen)} targets for {args.seconds:g} s with seed {seed}")
    crashed = 0
    for target in chosen:
        result = fuzz(target, seed, seconds=share, slow_after=SLOW_INPUT)
        print(f"{target.name}: {result.inputs} inputs, {len(result.crashes)} crashes")
        for crash in result.crashes:
            crashed += 1
            path = save(crash, args.crash_dir)
            print(f"  CRASH {crash.error}\n  input saved to {_relative(path)}")
            print(f"  reproduce: python -m tests.fuzz.runner --reproduce {_relative(path)}")
    if crashed:
        print(f"{crashed} crashes. Fix each, then `git add` its file under tests/fuzz/crashes/: "
              "tests/fuzz/test_fuzz.py replays every file there as a regression test.")
        return 1
    print(f"no crash (seed {seed})")
    return 0


def _reproduce(paths: list[Path], targets: Sequence[Target]) -> int:
    failed = 0
    for path in paths:
        if not path.is_file():
            print(f"{path}: no such file; give a file under tests/fuzz/crashes/", file=sys.stderr)
            return 2
        try:
            crash = reproduce(path, targets)
        except KeyError:
            print(f"{path}: the name does not start with a target's name; see --list",
                  file=sys.stderr)
            return 2
        if crash is None:
            print(f"{_relative(path)}: passes")
        else:
            failed += 1
            print(f"{_relative(path)}: {crash.error}\n{crash.trace}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
