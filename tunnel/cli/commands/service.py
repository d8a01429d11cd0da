"""`ptunnel service print [-c FILE]`: the systemd unit for `ptunnel up`, with this machine's
path to ptunnel and the config file to use."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tunnel.cli.context import Context
from tunnel.cli.samples import UNIT, read_sample

NAME = "service"
ORDER = 41
HELP = "print the systemd unit that runs `ptunnel up`"
DESCRIPTION = """\
Print a systemd unit (Type=notify, DynamicUser=, sandboxed) that runs `ptunnel up -c FILE`
(default /etc/ptunnel/node.yaml) with the absolute path of this ptunnel:

  ptunnel service print | sudo tee /etc/systemd/system/ptunnel.service

The comments at the top of the unit say how to set it up.
"""
# `-c FILE` names the file the service will read, which need not exist on this machine yet.
LOADS_CONFIG = False
DEFAULT_CONFIG_PATH = Path("/etc/ptunnel/node.yaml")
# ProtectHome=yes hides these from the service; a ptunnel installed below one of them needs
# ProtectHome=read-only instead (pipx installs into ~/.local by default).
HOME_DIRECTORIES = (Path("/home"), Path("/root"), Path("/run/user"))

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("print",), help="print the unit on stdout")


def run(args: argparse.Namespace, ctx: Context) -> int:
    config = Path(args.config).expanduser().absolute() if args.config else DEFAULT_CONFIG_PATH
    ctx.out(unit_text(ptunnel_command(), config).rstrip("\n"))
    return 0


def ptunnel_command() -> list[str]:
    """How to start this very ptunnel from anywhere: the `ptunnel` script it was started as,
    or (started as `python -m tunnel`, from a checkout) this Python with `-m tunnel`."""
    script = Path(sys.argv[0])
    if script.name == "ptunnel" and script.is_file():
        # absolute() and not resolve(): pipx's ~/.local/bin/ptunnel is a link that survives
        # reinstalls, the file it points to does not.
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "tunnel"]


def unit_text(command: list[str], config: Path) -> str:
    """The shipped unit with ExecStart, ExecReload (and ProtectHome, if need be) for these
    paths."""
    exec_start = " ".join(systemd_quote(word) for word in [*command, "up", "-c", str(config)])
    below_home = [path for path in (command[0], str(config)) if under_home(Path(path))]
    lines = []
    for line in read_sample(UNIT).splitlines():
        if line.startswith("ExecStart="):
            line = f"ExecStart={exec_start}"
        elif line.startswith("ExecReload="):
            line = "ExecReload=" + " ".join(systemd_quote(word) for word in [*command, "reload"])
        elif line == "ProtectHome=yes" and below_home:
            log.warning("%s is below a home directory; the unit allows reading home directories "
                        "(ProtectHome=read-only), and the service's user must be able to read "
                        "it: install ptunnel system-wide for a service", below_home[0])
            line = "ProtectHome=read-only"
        lines.append(line)
    return "\n".join(lines) + "\n"


def under_home(path: Path) -> bool:
    return any(path == home or home in path.parents for home in HOME_DIRECTORIES)


def systemd_quote(word: str) -> str:
    """One ExecStart= word as systemd reads it back: `%` and `$` are its specifiers and
    variables, so doubled; quoted when it holds a space or a quote."""
    word = word.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\" for c in word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word
