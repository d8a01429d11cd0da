"""`ptunnel up -c FILE`: run every expose and connect a config file lists, as one daemon."""

from __future__ import annotations

import argparse
import logging

from rendezvous.protocol import MAX_NAMES
from tunnel.addresses import format_endpoint
from tunnel.api import Connection, Tunnel
from tunnel.cli.context import Context
from tunnel.cli.handoff import note
from tunnel.cli.runtime import add_node_options, build_tunnel, run_tunnel
from tunnel.errors import UserError

NAME = "up"
ORDER = 22
HELP = "run every expose and connect listed in a config file (daemon mode)"
DESCRIPTION = """\
Run every `expose:` and `connect:` entry of the config file (see configs/node.yaml) in one
process with one node key and one UDP socket. Prints one line per service once it is ready, then
runs until SIGINT/SIGTERM; `ptunnel status` shows what it is doing. configs/ptunnel.service is a
systemd unit that runs it.
"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_node_options(parser)


def run(args: argparse.Namespace, ctx: Context) -> int:
    exposes = ctx.config.get("expose") or []
    connects = ctx.config.get("connect") or []
    if not exposes and not connects:
        where = ctx.config_path or ctx.home / "node.yaml"
        raise UserError(f"{where} lists no `expose:` or `connect:` entries; "
                        "see configs/node.yaml for the format")
    if len(exposes) > MAX_NAMES:
        where = ctx.config_path or ctx.home / "node.yaml"
        raise UserError(f"{where} exposes {len(exposes)} names; a node can hold at most "
                        f"{MAX_NAMES}: split them over several configs, each with its own "
                        "PTUNNEL_HOME")
    tunnel = build_tunnel(ctx)

    async def body(tunnel: Tunnel) -> None:
        for entry in exposes:
            host, port = entry["port"]
            # timeout=None: a daemon waits for a rendezvous that is down (the node keeps asking)
            await tunnel.expose(port, entry["as"], host=host, udp=entry.get("udp", False),
                                allow=entry.get("allow") or None, timeout=None,
                                origin="config")
            ctx.out(f"exposing {format_endpoint(entry['port'])} as '{entry['as']}'")
        for entry in connects:
            # A daemon's peers may come up later: keep trying instead of failing.
            bind, port = entry["listen"]
            await tunnel.connect(
                entry["name"], port, bind=bind, udp=entry.get("udp", False),
                accept_new_key=entry.get("accept_new_key", False), wait=True,
                on_ready=lambda connection: _ready(ctx, connection), origin="config")

    return run_tunnel(ctx, tunnel, body)


def _ready(ctx: Context, connection: Connection) -> None:
    if connection.pin_news is not None:
        note(connection.pin_news)
    ctx.out(f"ready: {connection.describe()}")
