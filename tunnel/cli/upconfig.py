"""The `expose:` and `connect:` entries of `up`'s config file, and applying a changed file to the
running node (`ptunnel reload`).

A reload compares the file with what the node runs from it (the forwards whose origin is
"config"), not with the file as it was: an entry whose forward was removed with `ptunnel stop`
comes back, and forwards added by later commands are left alone. Changed entries are replaced
(the old forward closes, then the new one starts), unchanged ones are not touched, so their
connections go on. Node options (the rendezvous, keepalive, congestion, `allow` ...) are read
once when the node starts; a reload says which of them changed and need a restart.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rendezvous.protocol import normalize_name
from tunnel.api import (
    RENDEZVOUS_TIMEOUT,
    Connection,
    Exposed,
    LocalPortError,
    Service,
    Tunnel,
    TunnelError,
)
from tunnel.cli.forwards import describe_forward

log = logging.getLogger(__name__)

FORWARD_KEYS = ("expose", "connect")


@dataclass(frozen=True, slots=True)
class ConnectEntry:
    name: str
    bind: str
    port: int
    udp: bool
    accept_new_key: bool


def services(config: dict[str, Any]) -> list[Service]:
    """The config's `expose:` entries."""
    return [Service(entry["port"][1], entry["as"], entry["port"][0], entry.get("udp", False),
                    tuple(entry.get("allow") or ()) or None)
            for entry in config.get("expose") or []]


def connects(config: dict[str, Any]) -> list[ConnectEntry]:
    """The config's `connect:` entries."""
    return [ConnectEntry(entry["name"], entry["listen"][0], entry["listen"][1],
                         entry.get("udp", False), entry.get("accept_new_key", False))
            for entry in config.get("connect") or []]


def _serves(exposed: Exposed, service: Service) -> bool:
    served = exposed.service
    return (served.target == (service.host, service.port) and served.udp == service.udp
            and served.allow == (None if service.allow is None else frozenset(service.allow)))


def _carries(connection: Connection, entry: ConnectEntry) -> bool:
    return (connection.name == normalize_name(entry.name) and connection.udp == entry.udp
            and connection.accept_new_key == entry.accept_new_key)


def node_options_changed(started: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The keys other than the forwards whose value differs from the one the node started with."""
    return sorted(key for key in {*started, *now}
                  if key not in FORWARD_KEYS and started.get(key) != now.get(key))


async def apply(tunnel: Tunnel, config: dict[str, Any],
                on_ready: Callable[[Connection], None]) -> dict[str, Any]:
    """Make the node's config forwards those of `config`; what changed, for the reply.

    `on_ready(connection)` runs when a new connect's path is up, as at the start."""
    removed: list[str] = []
    added: list[str] = []
    failed: list[str] = []
    wanted_exposes = {normalize_name(s.name): s for s in services(config)}
    wanted_connects = {(e.bind, e.port): e for e in connects(config)}
    running_exposes = {e.name: e for e in tunnel.exposed if e.origin == "config"}
    running_connects = {c.listen: c for c in tunnel.connections
                        if c.origin == "config" and c.listen is not None}
    for name, exposed in running_exposes.items():
        if name not in wanted_exposes or not _serves(exposed, wanted_exposes[name]):
            removed.append(describe_forward(exposed.stats()))
            await exposed.close()
    for listen, connection in running_connects.items():
        if listen not in wanted_connects or not _carries(connection, wanted_connects[listen]):
            removed.append(describe_forward(connection.stats()))
            await connection.close()
    new_services = [s for name, s in wanted_exposes.items()
                    if name not in running_exposes or not _serves(running_exposes[name], s)]
    if new_services:
        try:
            exposed_now = await tunnel.expose_all(new_services, timeout=RENDEZVOUS_TIMEOUT,
                                                  origin="config")
        except TunnelError as exc:
            failed += [f"expose {s.host}:{s.port} as '{s.name}': {exc}" for s in new_services]
        else:
            added += [describe_forward(exposed.stats()) for exposed in exposed_now]
    for listen, entry in wanted_connects.items():
        if listen in running_connects and _carries(running_connects[listen], entry):
            continue
        try:
            connection = await tunnel.connect(
                entry.name, entry.port, bind=entry.bind, udp=entry.udp,
                accept_new_key=entry.accept_new_key, wait=True, on_ready=on_ready,
                origin="config")
        except LocalPortError as exc:  # the port comes from the file: say which key to change
            failed.append(f"connect '{entry.name}': {exc.problem}; change its `listen:`")
        except TunnelError as exc:
            failed.append(f"connect '{entry.name}' on {entry.bind}:{entry.port}: {exc}")
        else:
            added.append(describe_forward(connection.stats()))
    for line in removed:
        log.info("reload: removed %s", line)
    for line in added:
        log.info("reload: added %s", line)
    for line in failed:
        log.warning("reload: could not add %s", line)
    kept = (len(wanted_exposes) + len(wanted_connects)) - len(added) - len(failed)
    return {"removed": removed, "added": added, "failed": failed, "unchanged": kept,
            "pid": os.getpid()}
