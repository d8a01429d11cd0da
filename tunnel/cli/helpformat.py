"""How a command's `--help` is laid out: its usage line shows the command's own options and
arguments, then `[global options]`.

argparse would list all six global options (`--home`, `-c`, `-v`, `-q`, `--log-level`,
`--log-format`) in every command's usage, where they took three lines and pushed the command's
own options out of sight; they are described once, in the help's "global options" section.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

GLOBAL_MARK = "ptunnel_global_option"  # the attribute that marks a global option's action
GLOBAL_OPTIONS = "[global options]"


def mark_global(actions: Iterable[argparse.Action]) -> None:
    """Mark `actions` as global options: usage lines leave them out."""
    for action in actions:
        setattr(action, GLOBAL_MARK, True)


def is_global(action: argparse.Action) -> bool:
    return bool(getattr(action, GLOBAL_MARK, False))


class CommandHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (examples keep their lines); usage without the global options."""

    def add_usage(self, usage: str | None, actions: Iterable[argparse.Action],
                  groups: Iterable[argparse._MutuallyExclusiveGroup],
                  prefix: str | None = None) -> None:
        if usage is None:
            own = [action for action in actions if not is_global(action)]
            # A positional stand-in: argparse prints its metavar as it is, last.
            own.append(argparse.Action(option_strings=[], dest="global_options",
                                       metavar=GLOBAL_OPTIONS))
            actions = own
        super().add_usage(usage, actions, groups, prefix)
