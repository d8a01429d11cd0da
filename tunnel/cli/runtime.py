"""What the long-running commands share: node flags, the event loop, signals, the status socket.

`expose`, `connect` and `up` build a `Tunnel` from the merged config, run until SIGINT/SIGTERM,
and serve `ptunnel status` on the control socket meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from tunnel.api import Tunnel, TunnelError
from tunnel.cli.arguments import endpoint_arg
from tunnel.cli.context import Context
from tunnel.cli.control import ControlServer, running
from tunnel.errors import UserError


def add_node_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("node options")
    group.add_argument("--rendezvous", type=endpoint_arg, metavar="HOST:PORT",
                       help="rendezvous server (env PTUNNEL_RENDEZVOUS, config `rendezvous`)")
    group.add_argument("--direct-only", action="store_true", default=None,
                       help="never use the relay; fail with the NAT types found instead")
    group.add_argument("--keepalive", type=float, metavar="SECONDS",
                       help="persistent keepalive holding NAT mappings open (default 25, 0 = off)")
    group.add_argument("--congestion", choices=("bbr", "cubic", "newreno"),
                       help="congestion controller (default bbr)")


def build_tunnel(ctx: Context, allow: list[bytes] | None = None) -> Tunnel:
    config = ctx.config
    node_allow = list(config.get("allow") or []) + list(allow or [])
    return Tunnel(
        home=ctx.home,
        identity=ctx.identity(),
        network_secret=ctx.network_secret(),
        rendezvous=ctx.rendezvous_addr(),
        allow=node_allow or None,
        direct_only=bool(config.get("direct_only")),
        keepalive=float(config.get("keepalive") or 0.0),
        congestion=str(config.get("congestion") or "bbr"),
    )


def control_handlers(tunnel: Tunnel) -> dict[str, Any]:
    async def status(_request: dict[str, Any]) -> dict[str, Any]:
        return tunnel.status()

    async def remote_ping(request: dict[str, Any]) -> dict[str, Any]:
        try:
            return await tunnel.ping(str(request["name"]), count=int(request.get("count", 5)),
                                     interval=float(request.get("interval", 0.5)))
        except UserError as exc:
            return {"error": exc.message}

    return {"status": status, "ping": remote_ping}


def run_tunnel(ctx: Context, tunnel: Tunnel,
               body: Callable[[Tunnel], Awaitable[Any]]) -> int:
    """Run `body(tunnel)` (which sets up exposes/connects), then serve until a signal."""
    others = running(ctx.home)
    if others:
        pid = others[0][1].get("pid", "?")
        raise UserError(
            f"another ptunnel (pid {pid}) already runs with {ctx.home}: two nodes with one key "
            "would fight over their peers; run several tunnels in one process with `ptunnel up`, "
            "or give this one its own PTUNNEL_HOME"
        )

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        control = ControlServer(ctx.home, control_handlers(tunnel))
        try:
            await tunnel.start()
            await body(tunnel)
            await control.start()
            await stop.wait()
        finally:
            await control.close()
            await tunnel.close()
        return 0

    try:
        import uvloop
    except ImportError:  # uvloop is a dependency; this only guards odd platforms
        return asyncio.run(main())
    with contextlib.suppress(KeyboardInterrupt):
        return uvloop.run(main())
    return 130


__all__ = ["TunnelError", "add_node_options", "build_tunnel",
           "run_tunnel"]
