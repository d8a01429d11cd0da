"""The bounded fuzz run of `make test`, and the crashes found before, replayed.

Every target runs a fixed number of inputs from a fixed seed (deterministic, a few seconds in
all); `make fuzz SECONDS=N` runs the same targets for longer with a random seed. Each file under
`crashes/` is an input that once crashed its target (the file name starts with the target's
name): it must pass now.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.runner import CRASH_DIR, fuzz, main, reproduce
from tests.fuzz.target import Check, Target
from tests.fuzz.targets import TARGETS

#: inputs per target in CI; the slowest targets (a YAML file, a channel per input) set the pace
CI_INPUTS = {"config-node": 300, "config-rendezvous": 300, "channel-receive": 800}
DEFAULT_CI_INPUTS = 3000
CI_SEED = 20261202


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_bounded_fuzz_run_finds_no_crash(target: Target) -> None:
    inputs = CI_INPUTS.get(target.name, DEFAULT_CI_INPUTS)
    result = fuzz(target, CI_SEED, iterations=inputs)
    details = "\n".join(f"{c.error}: input {c.data.hex()}\n{c.trace}" for c in result.crashes)
    assert not result.crashes, f"{target.name} crashed:\n{details}"
    assert result.inputs == inputs


def test_inputs_that_once_crashed_pass() -> None:
    failures = []
    for path in sorted(CRASH_DIR.glob("*.bin")):
        crash = reproduce(path)
        if crash is not None:
            failures.append(f"{path.name}: {crash.error}\n{crash.trace}")
    assert not failures, "\n".join(failures)


def _fragile_setup() -> tuple[Check, list[bytes]]:
    """A parser with a planted bug: a length byte it trusts."""

    def check(data: bytes) -> None:
        if data[:1] == b"L" and len(data) > 1:
            _ = data[2 + data[1]]  # IndexError when the length points past the end

    return check, [b"L\x00ab", b"other"]


def test_the_fuzzer_finds_a_planted_bug_and_saves_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fragile = Target("fragile", _fragile_setup, max_size=64)
    result = fuzz(fragile, 1, iterations=2000)
    assert result.crashes and result.crashes[0].error.startswith("IndexError")
    # through the command line: the input is written and the way to reproduce it printed
    argv = ["--seconds", "0.5", "--seed", "3", "--crash-dir", str(tmp_path)]
    assert main(argv, targets=(fragile,)) == 1
    out = capsys.readouterr().out
    (saved,) = tmp_path.glob("fragile-*.bin")
    assert f"--reproduce {saved}" in out
    assert main(["--reproduce", str(saved)], targets=(fragile,)) == 1
    assert "IndexError" in capsys.readouterr().out


def test_unknown_target_is_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--target", "no-such-thing", "--seconds", "1"])
    assert exit_info.value.code == 2
    assert "no fuzz target 'no-such-thing'" in capsys.readouterr().err
