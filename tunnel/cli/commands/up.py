"""`ptunnel up -c FILE`: run every expose and connect a config file lists, as one daemon."""

from __future__ import annotations

import argparse
import logging

from tunnel.addresses import format_endpoint
from tunnel.api import Connection, LocalPortError, Service, Tunnel
from tunnel.cli import sdnotify
from tunnel.cli.context import Context
from tunnel.cli.handoff import note
from tunnel.cli.runtime import add_node_options, build_tunnel, run_tunnel
from tunnel.errors import UserError

NAME = "up"
ORDER = 22
HELP = "run every expose and connect of a config file"
DESCRIPTION = """\
Run every `expose:` and `connect:` entry of the config file (`ptunnel config example node`
shows the format; `ptunnel config check` checks a file) in one process with one node key and
one UDP socket. Prints one line per service once it is ready, then runs until SIGINT, SIGTERM
or SIGHUP; `ptunnel status` shows what it is doing. Under systemd (`ptunnel service print`
writes the unit) it reports its readiness and progress to the service manager.

  ptunnel up                       the node.yaml of the state directory
  ptunnel up -c /etc/ptunnel/node.yaml
"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_node_options(parser)


def run(args: argparse.Namespace, ctx: Context) -> int:
    exposes = ctx.config.get("expose") or []
    connects = ctx.config.get("connect") or []
    where = ctx.config_path or ctx.home / "node.yaml"
    if ctx.config_path is None:
        raise UserError(f"{where} does not exist; start one with `ptunnel config example node > "
                        f"{where}` and list what to expose and connect in it (or pass -c FILE)")
    if not exposes and not connects:
        raise UserError(f"{where} lists no `expose:` or `connect:` entries; "
                        "`ptunnel config example node` shows the format")
    tunnel = build_tunnel(ctx)

    def on_ready(connection: Connection) -> None:
        _ready(ctx, connection)
        sdnotify.status(sdnotify.service_status(tunnel))

    async def body(tunnel: Tunnel) -> None:
        if exposes:
            # systemd shows this while the rendezvous does not answer (the node keeps asking)
            names = ", ".join(f"'{entry['as']}'" for entry in exposes)
            sdnotify.status(f"registering {names} at {format_endpoint(ctx.rendezvous_addr())}")
            # At once, in one registration: each service is served from the node's first packet
            # (a restarted daemon's peers come back and open streams before any rendezvous
            # answer), not after the registrations of the entries before it. timeout=None: a
            # daemon waits for a rendezvous that is down (the node keeps asking).
            await tunnel.expose_all([
                Service(entry["port"][1], entry["as"], entry["port"][0], entry.get("udp", False),
                        tuple(entry.get("allow") or ()) or None)
                for entry in exposes], timeout=None, origin="config")
            for entry in exposes:
                ctx.out(f"exposing {format_endpoint(entry['port'])} as '{entry['as']}'")
        for entry in connects:
            # A daemon's peers may come up later: keep trying instead of failing.
            bind, port = entry["listen"]
            try:
                await tunnel.connect(
                    entry["name"], port, bind=bind, udp=entry.get("udp", False),
                    accept_new_key=entry.get("accept_new_key", False), wait=True,
                    on_ready=on_ready, origin="config")
            except LocalPortError as exc:
                # The port comes from the file, not from a -L flag: say which key to change.
                raise LocalPortError(exc.problem, f"change `listen:` of the connect entry "
                                     f"'{entry['name']}' in {where}") from None

    return run_tunnel(ctx, tunnel, body)


def _ready(ctx: Context, connection: Connection) -> None:
    if connection.pin_news is not None:
        note(connection.pin_news)
    ctx.out(f"ready: {connection.describe()}")
