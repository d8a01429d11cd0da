"""`ptunnel`: the command line, a thin layer over the library.

Subcommands live in `tunnel/cli/commands/`, one module each, discovered at start-up. A module
defines `NAME`, `HELP`, `ORDER`, `add_arguments(parser)` and `run(args, ctx) -> int`; optionally
`CONFIG_KEYS` (default: the node's keys), `DEFAULT_CONFIG` (default: `node.yaml`) and
`LOADS_CONFIG = False` for a command that reads no config file itself (`config check` reads it
its own way, `-c` of `service print` names the file the unit will use).

The global options (`--home`, `-c`, `-v`, `-q`, `--log-level`, `--log-format`) work before and
after the subcommand: `ptunnel -q ping x` is `ptunnel ping x -q`.

Never a traceback; every way out is one line on stderr and an exit status. The split between 1
and 2 is whether running the same command again, unchanged, can succeed: systemd's
`RestartPreventExitStatus=2` relies on it.

| status   | when                                                                          |
|----------|-------------------------------------------------------------------------------|
| 0        | done                                                                          |
| 1        | the command ran and failed on something outside its command line and files   |
|          | (a `RuntimeFailure`: the rendezvous does not answer or refuses the network, no|
|          | node of that name, a port in use, another ptunnel runs on this state          |
|          | directory, nothing to `stop`, no answer to netcheck or ping); or an unexpected|
|          | exception:                                                                    |
|          | one line, "run with -v for details", the traceback in the -v log              |
| 2        | a usage mistake or another `UserError` to fix before trying again: a wrong    |
|          | flag or value, a bad config file, not joined, no rendezvous configured, a     |
|          | path or permission problem                                                    |
| 130, 143 | SIGINT, SIGTERM, SIGHUP (128 + the signal number): "interrupted" or           |
| or 129   | "stopped"                                                                     |
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import pkgutil
import signal
import sys
from types import ModuleType
from typing import NoReturn

import tunnel
import tunnel.cli.commands
from tunnel.cli.config import NODE_KEYS
from tunnel.cli.context import Context
from tunnel.cli.helpformat import CommandHelpFormatter, mark_global
from tunnel.cli.logs import DETAILS_HINT, LEVELS, exception_summary, setup_logging
from tunnel.cli.runtime import Interrupted, interruptible
from tunnel.errors import UserError, os_reason

log = logging.getLogger(__name__)

DESCRIPTION = """\
Reach a machine behind a NAT without opening a port and without a VPN.

  on the home box:   ptunnel expose 22 --as ssh-home
  on the laptop:     ptunnel connect ssh-home -L 2222
                     ssh -p 2222 localhost
"""
EPILOG = """\
set up, once (a server both machines reach over UDP runs the rendezvous):
  on the server:     ptunnel rendezvous --listen 0.0.0.0:7000
  on the home box:   ptunnel init --rendezvous SERVER:7000 && ptunnel invite
  on the laptop:     ptunnel join -            (paste the code invite printed)

exit status: 0 done; 1 failed, and running it again later may work (no answer, no such
name, a port in use); 2 a mistake to fix first (a flag, a file, not joined); 130, 143 or
129 interrupted (Ctrl-C, SIGTERM, SIGHUP).

Run `ptunnel COMMAND --help` for a command's options. State lives in $PTUNNEL_HOME."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that says what to do, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}; see `{self.prog} --help`\n")
        raise SystemExit(2)


def discover_commands() -> list[ModuleType]:
    modules = [
        importlib.import_module(info.name)
        for info in pkgutil.iter_modules(tunnel.cli.commands.__path__, "tunnel.cli.commands.")
    ]
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


# Given before the subcommand, a global option lands under this prefix (argparse would let the
# subcommand's default overwrite it otherwise) and `merge_global_options` folds it back in.
BEFORE = "before_"
COUNTED = ("verbose", "quiet")


def add_global_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument("--home", metavar="DIR", dest=f"{prefix}home",
                       help="state directory (env PTUNNEL_HOME; default ~/.config/ptunnel)")
    group.add_argument("-c", "--config", metavar="FILE", dest=f"{prefix}config",
                       help="YAML config file (default: the one in the state directory)")
    group.add_argument("-v", "--verbose", action="count", default=0, dest=f"{prefix}verbose",
                       help="more log output, one level per -v")
    group.add_argument("-q", "--quiet", action="count", default=0, dest=f"{prefix}quiet",
                       help="less log output")
    group.add_argument("--log-level", choices=levels_by_detail(), default=None,
                       dest=f"{prefix}log_level",
                       help="log level before -v/-q (env PTUNNEL_LOG_LEVEL, config `log_level`; "
                            "default info)")
    group.add_argument("--log-format", choices=("text", "json"), default=None,
                       dest=f"{prefix}log_format", help="log line format on stderr")
    mark_global(group._group_actions)


def merge_global_options(args: argparse.Namespace) -> None:
    """Fold the global options given before the subcommand into its own: counts add up, and a
    value given after the subcommand wins."""
    for name, before in list(vars(args).items()):
        if not name.startswith(BEFORE):
            continue
        delattr(args, name)
        name = name.removeprefix(BEFORE)
        if name in COUNTED:
            setattr(args, name, getattr(args, name, 0) + before)
        elif getattr(args, name, None) is None:
            setattr(args, name, before)


def common_options() -> OneLineParser:
    common = OneLineParser(add_help=False)  # a parent: it only lends its options
    add_global_options(common)
    return common


def build_parser(commands: list[ModuleType]) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ptunnel", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version",
                        version=f"ptunnel {tunnel.__version__} ({tunnel.BUILD})")
    add_global_options(parser, prefix=BEFORE)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                parser_class=OneLineParser)
    common = common_options()
    for module in commands:
        child = sub.add_parser(
            module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
            parents=[common], formatter_class=CommandHelpFormatter,
        )
        module.add_arguments(child)
        child.set_defaults(module=module)
    return parser


def levels_by_detail() -> list[str]:
    """The log levels, most detailed first."""
    return sorted(LEVELS, key=LEVELS.__getitem__)


def log_level(args: argparse.Namespace, configured: str) -> str:
    """`configured` moved one level per -v (more detail) or -q (less)."""
    levels = levels_by_detail()
    index = levels.index(configured) - int(args.verbose) + int(args.quiet)
    return levels[max(0, min(index, len(levels) - 1))]


def main(argv: list[str] | None = None) -> int:
    with interruptible():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    prog = "ptunnel"
    try:
        commands = discover_commands()
        parser = build_parser(commands)
        args = parser.parse_args(argv)
        merge_global_options(args)
        if args.command is None:
            parser.print_help()
            return 2
        module: ModuleType = args.module
        prog = f"ptunnel {module.NAME}"
        # The flags' level until the config file is read: problems reading it are logged too.
        setup_logging(log_level(args, args.log_level or "info"), args.log_format or "text")
        if getattr(module, "LOADS_CONFIG", True):
            ctx = Context.from_args(
                args, getattr(module, "CONFIG_KEYS", NODE_KEYS),
                getattr(module, "DEFAULT_CONFIG", "node.yaml"),
            )
            setup_logging(
                log_level(args, ctx.config.get("log_level") or "info"),
                args.log_format or ctx.config.get("log_format") or "text",
                packets=args.verbose >= 2,
            )
        else:
            ctx = Context.without_config(args)
        return int(module.run(args, ctx))
    except UserError as exc:
        return _fail(f"{prog}: error: {exc.message}", exc.exit_code)
    except Interrupted as exc:
        return _fail(f"{prog}: {exc.message}", exc.exit_code)
    except KeyboardInterrupt:  # Python's own SIGINT handler, back for a moment as a loop closed
        return _fail(f"{prog}: interrupted", 128 + signal.SIGINT)
    except OSError as exc:
        if exc.filename is None:
            return _unexpected(prog, exc)
        # A path problem nobody anticipated: still the user's to fix, and still one line.
        log.debug("%s", exc, exc_info=True)
        return _fail(f"{prog}: error: cannot use {exc.filename}: {os_reason(exc)}; check that "
                     "path and its permissions", 2)
    except Exception as exc:  # noqa: BLE001 - the last resort, logged with its traceback
        return _unexpected(prog, exc)


def _unexpected(prog: str, exc: Exception) -> int:
    log.debug("unexpected error", exc_info=True)
    hint = "" if log.isEnabledFor(logging.DEBUG) else f"; {DETAILS_HINT}"
    return _fail(f"{prog}: error: unexpected {exception_summary(exc)}{hint}", 1)


def _fail(line: str, code: int) -> int:
    try:
        sys.stdout.flush()
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except OSError:
        # Nobody to tell: the terminal closed (the SIGHUP that stops us; writes to it fail with
        # EIO) or the reader of a pipe left. The exit status still says what happened.
        _discard_output()
    return code


def _discard_output() -> None:
    """Point stdout and stderr at /dev/null: what is still buffered, and Python's flush at exit
    (which would turn the exit status into 120), then go nowhere instead of failing again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # ValueError: no file descriptor
            os.dup2(devnull, stream.fileno())
    os.close(devnull)


if __name__ == "__main__":
    raise SystemExit(main())
