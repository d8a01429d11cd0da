"""ptunnel(1), the manual page, written in roff from the argument parser itself: every command,
option and help text comes from the same place `--help` reads, so the page cannot fall behind.

Sections as man-pages(7) orders them: NAME, SYNOPSIS, DESCRIPTION, OPTIONS (the global ones),
COMMANDS (one subsection each), EXIT STATUS, ENVIRONMENT, FILES, SEE ALSO.
"""

from __future__ import annotations

import argparse
import textwrap

import tunnel

SUMMARY = "reach a machine behind a NAT without opening a port and without a VPN"
EXIT_STATUS = [
    ("0", "done"),
    ("1", "the command ran and failed on something outside its command line and files: the "
          "rendezvous does not answer or refuses the network, no node has that name, a port is "
          "in use, another ptunnel runs with this state directory, nothing to stop, no answer "
          "to netcheck or ping; or an unexpected error. Running it again later may work."),
    ("2", "a usage mistake or another error to fix before trying again: a wrong flag or value, "
          "a bad config file, not joined to a network, no rendezvous configured, a path or "
          "permission problem."),
    ("130, 143", "stopped by SIGINT (Ctrl-C) or SIGTERM (128 + the signal number)."),
]
ENVIRONMENT = [
    ("PTUNNEL_HOME", "the state directory: keys, pins, node.yaml, the control sockets under "
                     "run/, the rendezvous database (default ~/.config/ptunnel)."),
    ("PTUNNEL_RENDEZVOUS", "the rendezvous server HOST:PORT (config key rendezvous)."),
    ("PTUNNEL_LOG_LEVEL", "debug, info, warning or error (config key log_level)."),
    ("PTUNNEL_RENDEZVOUS_LISTEN", "where ptunnel rendezvous listens (config key listen)."),
    ("NOTIFY_SOCKET", "set by systemd for a Type=notify service: ptunnel reports its readiness "
                      "and status there."),
]
FILES = [
    ("$PTUNNEL_HOME/node.yaml", "the node's config; ptunnel config example node prints a "
                                "documented sample, ptunnel config check checks one."),
    ("$PTUNNEL_HOME/rendezvous.yaml", "the rendezvous server's config."),
    ("$PTUNNEL_HOME/node.key, network.key", "this node's key and the network secret (mode "
                                            "0600, in a directory of mode 0700)."),
    ("$PTUNNEL_HOME/known_nodes", "the pinned keys of the peers connected to, by name."),
]


def escape(text: str) -> str:
    """Text as roff prints it: backslashes and hyphens literal, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line[:1] in (".", "'") else line
                     for line in text.split("\n"))


def _paragraphs(text: str) -> list[str]:
    """Plain paragraphs as .PP, indented blocks (examples, tables) kept as they are."""
    out: list[str] = []
    for block in textwrap.dedent(text).strip("\n").split("\n\n"):
        lines = block.split("\n")
        if all(line.startswith(" ") for line in lines if line):
            out += [".RS 4", ".nf", escape(textwrap.dedent(block)), ".fi", ".RE"]
        else:
            out += [".PP", escape(" ".join(line.strip() for line in lines))]
    return out


def _option(action: argparse.Action) -> list[str]:
    names = ", ".join(f"\\fB{escape(name)}\\fR" for name in action.option_strings)
    if action.option_strings and action.nargs != 0:
        names += f" \\fI{escape(_metavar(action))}\\fR"
    elif not action.option_strings:
        names = f"\\fI{escape(_metavar(action))}\\fR"
    return [".TP", names, escape(action.help or "")]


def _metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, str):
        return action.metavar
    if action.choices is not None:
        return "{" + ",".join(str(choice) for choice in action.choices) + "}"
    return action.dest.upper()


def _documented(action: argparse.Action, skip: set[str]) -> bool:
    return (action.help != argparse.SUPPRESS and action.dest not in skip
            and not isinstance(action, argparse._HelpAction | argparse._SubParsersAction))


def _usage(parser: argparse.ArgumentParser, actions: list[argparse.Action]) -> str:
    """The usage of `parser` with only `actions` (the global options are documented once)."""
    formatter = parser._get_formatter()
    formatter.add_usage(None, actions, [], prefix="")
    words = formatter.format_help().split()
    return " ".join(words[len(parser.prog.split()):])  # without the program's name


def render(parser: argparse.ArgumentParser) -> str:
    """The whole page for `parser` (the `ptunnel` parser with its subcommands)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    top = [a for a in parser._actions if _documented(a, set())]
    global_dests = {a.dest.removeprefix("before_") for a in top}
    lines = [
        f'.TH PTUNNEL 1 "" "ptunnel {tunnel.__version__}" "User Commands"',
        ".nh", ".ad l",  # no hyphenation, ragged right: options and addresses stay whole
        ".SH NAME", f"ptunnel \\- {escape(SUMMARY)}",
        ".SH SYNOPSIS",
        ".B ptunnel",
        "[\\fIglobal options\\fR] \\fICOMMAND\\fR [\\fIoptions\\fR] [\\fIglobal options\\fR]",
        ".SH DESCRIPTION", *_paragraphs(parser.description or ""),
        ".PP", "Every command has \\fB\\-\\-help\\fR. The global options work before and after "
               "the command.",
        ".SH OPTIONS", *[line for action in top for line in _option(action)],
        ".SH COMMANDS",
    ]
    for name, child in sub.choices.items():
        own = [action for action in child._actions if _documented(action, global_dests)]
        lines += [f".SS {name}", f"{escape(helps.get(name, ''))}.", ".PP",
                  f"\\fB{escape(child.prog)}\\fR {escape(_usage(child, own))}"]
        if child.description and child.description != helps.get(name):
            lines += _paragraphs(child.description)
        lines += [line for action in own for line in _option(action)]
    lines += [".SH EXIT STATUS"]
    for code, meaning in EXIT_STATUS:
        lines += [".TP", f"\\fB{code}\\fR", escape(meaning)]
    lines += [".SH ENVIRONMENT"]
    for variable, meaning in ENVIRONMENT:
        lines += [".TP", f"\\fB{variable}\\fR", escape(meaning)]
    lines += [".SH FILES"]
    for path, meaning in FILES:
        lines += [".TP", f"\\fI{escape(path)}\\fR", escape(meaning)]
    lines += [".SH SEE ALSO", "\\fBssh\\fR(1), \\fBsystemd.service\\fR(5)"]
    return "\n".join(lines) + "\n"
