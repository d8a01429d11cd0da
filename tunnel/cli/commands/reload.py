"""`ptunnel reload`: the running `ptunnel up` reads its config file again and applies what
changed (`tunnel.cli.upconfig`); `systemctl reload ptunnel` runs it."""

from __future__ import annotations

import argparse
from pathlib import Path

from tunnel.cli.context import Context
from tunnel.cli.handoff import ask, note, running_node
from tunnel.errors import RuntimeFailure

NAME = "reload"
ORDER = 24
HELP = "apply an edited config file to the running `up`"
DESCRIPTION = """\
The `ptunnel up` that runs with this state directory reads its config file again (the file it was
started with) and applies the difference: entries that are new start, entries that are gone or
changed stop (a changed one then starts as the file says), and unchanged ones go on untouched,
with their connections. Forwards added by later `ptunnel expose` and `connect` commands are left
alone. Node options (rendezvous, keepalive, congestion, allow, ...) are read only at the start:
it says which of them changed and need a restart. A file with a mistake changes nothing.
Exits 1 when an entry could not start (a port in use, a name the rendezvous refused).

  ptunnel reload
  sudo systemctl reload ptunnel      the same, for the service `ptunnel service print` writes
"""
LOADS_CONFIG = False  # the running node reads its own file
RELOAD_WAIT = 60.0  # s; new exposes wait for the rendezvous (5 s per server of a list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, ctx: Context) -> int:
    node = running_node(ctx.home)
    if node is None:
        raise RuntimeFailure(f"no ptunnel runs with {ctx.home}; start it with `ptunnel up` "
                             "(with --home or PTUNNEL_HOME for another state directory)")
    reply = ask(node, {"cmd": "reload"}, timeout=RELOAD_WAIT)
    if args.config and Path(args.config).expanduser().absolute() != Path(str(reply["config"])):
        note(f"-c {args.config} ignored: the running ptunnel (pid {node.pid}) reads the file it "
             f"was started with, {reply['config']}")
    failed = [str(line) for line in reply.get("failed") or []]
    if args.json:
        ctx.out_json(reply)
    else:
        for line in reply.get("removed") or []:
            ctx.out(f"removed {line}")
        for line in reply.get("added") or []:
            ctx.out(f"added {line}")
        ctx.out(f"reloaded {reply.get('config')} in ptunnel (pid {node.pid}): "
                f"{len(reply.get('added') or [])} added, {len(reply.get('removed') or [])} "
                f"removed, {reply.get('unchanged', 0)} unchanged")
        restart = reply.get("restart_needed") or []
        if restart:
            note(f"{', '.join(map(str, restart))} changed in the file; node options apply only "
                 "at the start: restart ptunnel for them (`ptunnel stop`, then `ptunnel up`)")
    if failed:
        raise RuntimeFailure(f"could not start {'; '.join(failed)}")
    return 0
