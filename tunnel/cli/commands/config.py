"""`ptunnel config check|example`: check a config file whole, or print a documented sample."""

from __future__ import annotations

import argparse
from pathlib import Path

from tunnel.cli.config import NODE_KEYS, RENDEZVOUS_KEYS, check_file
from tunnel.cli.context import Context
from tunnel.cli.samples import CONFIG_SAMPLES, read_sample
from tunnel.errors import ConfigError

NAME = "config"
ORDER = 40
HELP = "check a config file, or print a documented sample"
DESCRIPTION = """\
  ptunnel config check [node|rendezvous] [-c FILE]
      Read the config file as `up` (node) or `rendezvous` would and list every mistake, one
      line each with the file and line (`up` stops at the first). Default file: node.yaml or
      rendezvous.yaml in the state directory. Exits 2 if there is any mistake.
  ptunnel config example [node|rendezvous]
      Print the sample file that documents every key, to start your own from:
      ptunnel config example node > ~/.config/ptunnel/node.yaml
"""
# `check` reads the file itself, to report every mistake instead of stopping at the first.
LOADS_CONFIG = False
KEYS = {"node": NODE_KEYS, "rendezvous": RENDEZVOUS_KEYS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("check", "example"),
                        help="check a file, or print a sample")
    parser.add_argument("kind", choices=tuple(CONFIG_SAMPLES), nargs="?", default="node",
                        help="node (for expose, connect, up; the default) or rendezvous")


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.action == "example":
        ctx.out(read_sample(CONFIG_SAMPLES[args.kind]).rstrip("\n"))
        return 0
    return check(args, ctx)


def check(args: argparse.Namespace, ctx: Context) -> int:
    default = ctx.home / CONFIG_SAMPLES[args.kind]
    path = Path(args.config).expanduser() if args.config else default
    if not path.exists():
        raise ConfigError(f"{path} does not exist; start one with `ptunnel config example "
                          f"{args.kind} > {path}`")
    values, problems = check_file(path, KEYS[args.kind])
    for problem in problems:
        ctx.out(problem)
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ConfigError(f"{count} in {path}; fix the line{'s' if len(problems) > 1 else ''} "
                          "above")
    ctx.out(f"{path}: ok ({summary(args.kind, values)})")
    return 0


def summary(kind: str, values: dict[str, object]) -> str:
    if kind == "rendezvous":
        return f"{len(values)} key{'s' if len(values) != 1 else ''} set"
    counts = []
    for key in ("expose", "connect"):
        entries = values.get(key)
        n = len(entries) if isinstance(entries, list) else 0
        counts.append(f"{n} {key} entr{'y' if n == 1 else 'ies'}")
    return ", ".join(counts)
