"""`ptunnel up -c FILE`: run every expose and connect a config file lists, as one daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from tunnel.addresses import format_endpoint
from tunnel.api import Connection, LocalPortError, Tunnel
from tunnel.cli import sdnotify, upconfig
from tunnel.cli.context import Context
from tunnel.cli.handoff import note
from tunnel.cli.runtime import add_node_options, build_tunnel, run_tunnel
from tunnel.errors import RuntimeFailure, UserError

NAME = "up"
ORDER = 22
HELP = "run every expose and connect of a config file"
DEFAULT_CONFIG = "node.yaml"
DESCRIPTION = """\
Run every `expose:` and `connect:` entry of the config file (`ptunnel config example node`
shows the format; `ptunnel config check` checks a file) in one process with one node key and
one UDP socket. Prints one line per service once it is ready, then runs until SIGINT, SIGTERM
or SIGHUP; `ptunnel status` shows what it is doing, and `ptunnel reload` applies an edited file
to it. Under systemd (`ptunnel service print` writes the unit) it reports its readiness and
progress to the service manager, and `systemctl reload` runs `ptunnel reload`.

  ptunnel up                       the node.yaml of the state directory
  ptunnel up -c /etc/ptunnel/node.yaml
"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_node_options(parser)


def run(args: argparse.Namespace, ctx: Context) -> int:
    exposes = upconfig.services(ctx.config)
    connects = upconfig.connects(ctx.config)
    where = ctx.config_path or ctx.home / "node.yaml"
    if ctx.config_path is None:
        raise UserError(f"{where} does not exist; start one with `ptunnel config example node > "
                        f"{where}` and list what to expose and connect in it (or pass -c FILE)")
    if not exposes and not connects:
        raise UserError(f"{where} lists no `expose:` or `connect:` entries; "
                        "`ptunnel config example node` shows the format")
    tunnel = build_tunnel(ctx)
    set_up = asyncio.Event()  # a reload waits for the start's own entries
    reloading = asyncio.Lock()

    def on_ready(connection: Connection) -> None:
        _ready(ctx, connection)
        sdnotify.status(sdnotify.service_status(tunnel))

    async def body(tunnel: Tunnel) -> None:
        if exposes:
            # systemd shows this while the rendezvous does not answer (the node keeps asking)
            names = ", ".join(f"'{service.name}'" for service in exposes)
            sdnotify.status(f"registering {names} at {format_endpoint(ctx.rendezvous_addr())}")
            # At once, in one registration: each service is served from the node's first packet
            # (a restarted daemon's peers come back and open streams before any rendezvous
            # answer), not after the registrations of the entries before it. timeout=None: a
            # daemon waits for a rendezvous that is down (the node keeps asking).
            await tunnel.expose_all(exposes, timeout=None, origin="config")
            for service in exposes:
                ctx.out(f"exposing {format_endpoint((service.host, service.port))} as "
                        f"'{service.name}'")
        for entry in connects:
            # A daemon's peers may come up later: keep trying instead of failing.
            try:
                await tunnel.connect(
                    entry.name, entry.port, bind=entry.bind, udp=entry.udp,
                    accept_new_key=entry.accept_new_key, wait=True, on_ready=on_ready,
                    origin="config")
            except LocalPortError as exc:
                # The port comes from the file, not from a -L flag: say which key to change.
                raise LocalPortError(exc.problem, f"change `listen:` of the connect entry "
                                     f"'{entry.name}' in {where}") from None
        set_up.set()

    async def reload() -> dict[str, Any]:
        """`ptunnel reload`: read the file again and apply what changed (`upconfig`)."""
        if not set_up.is_set():
            raise RuntimeFailure(f"ptunnel (pid {os.getpid()}) is still setting up the entries "
                                 f"of {where}; `ptunnel reload` again once `ptunnel status` "
                                 "shows them")
        async with reloading:
            fresh = Context.from_args(args, ctx.keys, DEFAULT_CONFIG)
            if fresh.config_path is None:
                raise UserError(f"{where} does not exist any more; nothing changed (put it "
                                "back, or `ptunnel stop` the node)")
            log.info("reload: reading %s again (asked by `ptunnel reload`)", where)
            reply = await upconfig.apply(tunnel, fresh.config, on_ready)
            sdnotify.status(sdnotify.service_status(tunnel))
        reply["config"] = str(where)
        reply["restart_needed"] = upconfig.node_options_changed(ctx.config, fresh.config)
        return reply

    return run_tunnel(ctx, tunnel, body, reload=reload)


def _ready(ctx: Context, connection: Connection) -> None:
    if connection.pin_news is not None:
        note(connection.pin_news)
    ctx.out(f"ready: {connection.describe()}")
