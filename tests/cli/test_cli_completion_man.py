"""`ptunnel completion bash|zsh|fish` completes in a real bash; `ptunnel man` is a manual page
that man(1) renders without a warning, with every command in it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import ptunnel
from tunnel.cli.main import discover_commands

COMMANDS = [module.NAME for module in discover_commands()]


def bash_complete(script: Path, *words: str) -> list[str]:
    """What bash offers for the last of `words` (the rest typed before it)."""
    program = f"""
source {script}
COMP_WORDS=(ptunnel {" ".join(f"'{w}'" for w in words)})
COMP_CWORD={len(words)}
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
_shtab_ptunnel
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_commands_and_options(tmp_path: Path) -> None:
    script = tmp_path / "ptunnel.bash"
    done = ptunnel("completion", "bash")
    assert done.returncode == 0, done.stderr
    script.write_text(done.stdout)
    assert bash_complete(script, "con") == ["connect", "config"]
    assert bash_complete(script, "-q", "ex") == ["expose"]  # after a global option
    assert bash_complete(script, "config", "") == ["check", "example"]
    assert bash_complete(script, "connect", "--acc") == ["--accept-new-key"]
    assert "--log-level" in bash_complete(script, "status", "--log")
    assert bash_complete(script, "completion", "") == ["bash", "zsh", "fish"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_every_shell_gets_every_command(shell: str) -> None:
    done = ptunnel("completion", shell)
    assert done.returncode == 0, done.stderr
    for command in COMMANDS:
        assert command in done.stdout, command
    if shutil.which(shell):  # a syntax check where the shell is installed
        checked = subprocess.run([shell, "-n"], input=done.stdout, capture_output=True,
                                 text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr


def test_unknown_shell_is_a_usage_error() -> None:
    done = ptunnel("completion", "tcsh")
    assert done.returncode == 2 and "invalid choice" in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.skipif(shutil.which("man") is None or shutil.which("groff") is None,
                    reason="man-db and groff are not installed (.ci/run installs them)")
def test_man_page_renders_with_every_command(tmp_path: Path) -> None:
    page = tmp_path / "ptunnel.1"
    done = ptunnel("man")
    assert done.returncode == 0, done.stderr
    page.write_text(done.stdout)
    # -ww: every warning; a roff mistake (an escape, a request) shows here.
    lint = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                          capture_output=True, text=True, timeout=30)
    assert lint.returncode == 0 and lint.stderr == "", lint.stderr
    shown = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True,
                           timeout=30, env={**os.environ, "MANWIDTH": "100", "MANPAGER": "cat",
                                            "PAGER": "cat"})
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    for section in ("NAME", "SYNOPSIS", "OPTIONS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT"):
        assert f"\n{section}\n" in text, section
    for command in COMMANDS:
        assert f"\n   {command}\n" in text, command  # a subsection per command
    assert "ptunnel connect -L [BIND:]PORT" in text
    assert "--accept-new-key" in text and "PTUNNEL_RENDEZVOUS" in text


def test_man_page_has_every_command_without_man() -> None:
    done = ptunnel("man")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(".TH PTUNNEL 1")
    for command in COMMANDS:
        assert f"\n.SS {command}\n" in done.stdout, command
