"""`ptunnel invite`: print the join code of this node's network."""

from __future__ import annotations

import argparse

from tunnel.cli.context import Context
from tunnel.keys.joincode import encode_join_code

NAME = "invite"
ORDER = 11
HELP = "print a join code that lets another machine join this network"
DESCRIPTION = """\
Print this network's join code on one line of standard output, and nothing else there.

Anyone with the code is a member of the network: send it only over a channel you trust
(an ssh session, a password manager). On the other machine run `ptunnel join CODE`.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options: the code is the whole output


def run(args: argparse.Namespace, ctx: Context) -> int:
    ctx.out(encode_join_code(ctx.network_secret()))
    return 0
