"""`ptunnel stop [NAME|PORT]`: stop the running ptunnel, or remove one of its forwards.

Without an argument the running node (an `up`, `expose` or `connect`) stops as SIGTERM would
stop it, but exits 0; this command waits until it has gone. With one, only the forward that
NAME (a connect's peer name, an expose's name) or PORT (a connect's local port, an expose's
target port) designates is removed; connections already open through it go on until they end.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from tunnel.cli.context import Context
from tunnel.cli.handoff import ask, running_node
from tunnel.errors import RuntimeFailure

NAME = "stop"
ORDER = 23
HELP = "stop the running node, or one forward of it"
DESCRIPTION = """\
Without an argument: stop the ptunnel that runs with this state directory (`up`, `expose` or
`connect`) and wait until it has exited. With NAME or PORT: remove that one forward from it (a
connect by its peer's name or its local port, an expose by its name or its target port), as
`ptunnel status` lists them; connections already open through it go on until they end.

  ptunnel stop              the whole node
  ptunnel stop 2222         the connect listening on port 2222
  ptunnel stop ssh-home     the expose (or connect) named ssh-home
"""
LOADS_CONFIG = False  # only the state directory: a node.yaml being edited must not stop it
EXIT_WAIT = 5.0  # s; a node stops within a second, and abandons a cleanup that takes longer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="?", metavar="NAME|PORT",
                        help="the forward to remove (default: stop the whole node)")


def run(args: argparse.Namespace, ctx: Context) -> int:
    node = running_node(ctx.home)
    if node is None:
        # Exit 1, as every failure of `stop` is: the same command works once a node runs.
        raise RuntimeFailure(f"no ptunnel runs with {ctx.home}; `ptunnel status` shows what "
                             "runs (with --home or PTUNNEL_HOME for another state directory)")
    if args.what is not None:
        reply = ask(node, {"cmd": "remove", "what": args.what}, timeout=10)
        ctx.out(f"removed {reply.get('removed')} from the running ptunnel (pid {node.pid})")
        return 0
    ask(node, {"cmd": "shutdown"}, timeout=10)
    deadline = time.monotonic() + EXIT_WAIT
    while _alive(node.pid):
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"ptunnel (pid {node.pid}) was asked to stop but still runs "
                                 f"after {EXIT_WAIT:.0f} s; end it with `kill {node.pid}`")
        time.sleep(0.05)
    ctx.out(f"stopped ptunnel (pid {node.pid})")
    return 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # the number went to another user's process: ours has gone
    try:
        # An exited child its parent has not reaped yet (a zombie) has gone too.
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: the signal test is all there is
    return stat.rpartition(")")[2].split()[0] != "Z"
