"""The client side of a running node: find the ptunnel that runs on this state directory and
send it a request (`tunnel.cli.control`), for `connect`, `expose`, `ping` and `stop`.

Every answer that is an error becomes one `UserError` line; a node that does not answer at all
(it is stopping, or hangs) is said so, with what to do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunnel.cli.control import query, running
from tunnel.errors import RuntimeFailure, UserError

# The node options a command that hands its forward over cannot change in the running node.
NODE_OPTIONS = {"rendezvous": "--rendezvous", "direct_only": "--direct-only",
                "keepalive": "--keepalive", "congestion": "--congestion"}


@dataclass(frozen=True, slots=True)
class RunningNode:
    socket: Path
    pid: int


def running_node(home: Path) -> RunningNode | None:
    """The ptunnel that runs with this state directory, if one does."""
    instances = running(home)
    if not instances:
        return None
    path, status = instances[0]
    pid = status.get("pid")
    return RunningNode(path, pid if isinstance(pid, int) else 0)


def ask(node: RunningNode, request: dict[str, Any], timeout: float,
        on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The running node's reply to `request`; UserError with its one-line error, if any."""
    reply = query(node.socket, request, timeout=timeout, on_event=on_event)
    if reply is None:
        raise RuntimeFailure(f"the running ptunnel (pid {node.pid}) did not answer; see "
                             f"`ptunnel status`, or stop it with `ptunnel stop` (or kill "
                             f"{node.pid})")
    error = reply.get("error")
    if error is not None:
        failure = UserError(str(error))
        code = reply.get("exit_code")
        if isinstance(code, int) and 0 < code < 128:
            failure.exit_code = code  # as the command would have exited on its own node
        raise failure
    return reply


def note(text: str) -> None:
    """One line for the person at the terminal, beside the command's output (stderr)."""
    sys.stdout.flush()
    sys.stderr.write(f"note: {text}\n")
    sys.stderr.flush()


def ignored_node_options(args: argparse.Namespace, node: RunningNode) -> None:
    """Say so when flags of this command cannot apply: the node runs with its own options."""
    given = [flag for key, flag in NODE_OPTIONS.items() if getattr(args, key, None) is not None]
    if given:
        note(f"{', '.join(given)} ignored: the running ptunnel (pid {node.pid}) keeps its own "
             "node options; stop it (`ptunnel stop`) to change them")


def added(node: RunningNode, what: str) -> None:
    note(f"added to the running ptunnel (pid {node.pid}); `ptunnel stop {what}` removes it, "
         "and it ends when that ptunnel stops")
