"""Forwards of a running node, added, listed and removed over its control socket.

A second `ptunnel connect` or `ptunnel expose` on a state directory whose node already runs
does not start a node of its own (two nodes with one key would fight over their peers): it
hands its forward to the running node (`add_connect`, `add_expose` here, served by the control
socket of `tunnel.cli.control`), prints the same line it would print on its own, and exits.
`ptunnel stop NAME|PORT` removes one forward (`remove`); `ptunnel status` lists them all with
where each came from.

Added forwards live in the running process only: they end with it and are not written to any
file. `up`'s node.yaml is the persistent way.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tunnel.addresses import format_endpoint
from tunnel.api import Connection, Exposed, Tunnel
from tunnel.cli.control import Emit, Handler, error_reply
from tunnel.errors import RuntimeFailure, UserError
from tunnel.keys.netkeys import decode_key

log = logging.getLogger(__name__)

ORIGIN_WORDS = {
    "config": "from the config file",
    "command": "from the command that started the node",
    "added": "added to the running node",
    "api": "added through the API",
}


def describe_forward(forward: dict[str, Any]) -> str:
    """`connect 'web' on 127.0.0.1:2222` or `expose 127.0.0.1:8080/udp as 'web'`, from the
    forward's status entry."""
    udp = "/udp" if forward.get("udp") else ""
    if forward.get("kind") == "expose":
        return f"expose {forward.get('target')}{udp} as '{forward.get('name')}'"
    return f"connect '{forward.get('name')}' on {forward.get('listen')}{udp}"


def forward_line(forward: dict[str, Any]) -> str:
    """One forward for `ptunnel status`: what, where from, how many connections now."""
    live = int(forward.get("live") or 0)
    unit = "flow" if forward.get("udp") else "connection"
    state = "" if forward.get("ready", True) else ", waiting for its peer"
    origin = ORIGIN_WORDS.get(str(forward.get("origin")), str(forward.get("origin")))
    return (f"{describe_forward(forward)}: {live} live {unit}{'' if live == 1 else 's'}"
            f"{state} ({origin})")


def _text(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str):
        raise UserError(f"the request has no {key!r}")
    return value


def _number(request: dict[str, Any], key: str) -> int:
    value = request.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"the request has no {key!r}")
    return value


async def add_connect(tunnel: Tunnel, request: dict[str, Any]) -> dict[str, Any]:
    timeout = request.get("timeout", 30.0)
    connection = await tunnel.connect(
        _text(request, "name"), _number(request, "port"), bind=_text(request, "bind"),
        udp=bool(request.get("udp")), accept_new_key=bool(request.get("accept_new_key")),
        timeout=float(timeout) if isinstance(timeout, int | float) else 30.0, origin="added")
    log.info("added %s (by `ptunnel connect`)", describe_forward(connection.stats()))
    return {"ready": connection.describe(), "pin": connection.pin_news, "pid": os.getpid()}


async def add_expose(tunnel: Tunnel, request: dict[str, Any]) -> dict[str, Any]:
    allow = request.get("allow")
    keys = [decode_key(str(key)) for key in allow] if isinstance(allow, list) else None
    exposed = await tunnel.expose(
        _number(request, "port"), _text(request, "name"), host=_text(request, "host"),
        udp=bool(request.get("udp")), allow=keys, origin="added")
    log.info("added %s (by `ptunnel expose`)", describe_forward(exposed.stats()))
    public = tunnel.node.public_endpoint
    return {"public_endpoint": None if public is None else format_endpoint(public),
            "pid": os.getpid()}


async def remove(tunnel: Tunnel, request: dict[str, Any]) -> dict[str, Any]:
    what = _text(request, "what")
    found = tunnel.find_forwards(what)
    if not found:
        # Exit 1: what runs changes; the same `stop` works once that forward is there.
        raise RuntimeFailure(f"the running ptunnel (pid {os.getpid()}) has no forward named "
                             f"or on port {what!r}; `ptunnel status` lists them")
    if len(found) > 1:
        ports = ", ".join(describe_forward(f.stats()) for f in found)
        other = "name" if what.isdigit() else "port"
        raise UserError(f"{what!r} names {len(found)} forwards ({ports}); stop one by its {other}")
    forward: Exposed | Connection = found[0]
    described = describe_forward(forward.stats())
    await forward.close()
    log.info("removed %s (by `ptunnel stop`)", described)
    return {"removed": described, "pid": os.getpid()}


def forward_handlers(tunnel: Tunnel) -> dict[str, Handler]:
    """`connect`, `expose` and `remove` requests; a UserError becomes the reply's `error`."""

    def guarded(handler: Any) -> Handler:
        async def handle(request: dict[str, Any], _emit: Emit) -> dict[str, Any]:
            try:
                reply: dict[str, Any] = await handler(tunnel, request)
            except UserError as exc:
                return error_reply(exc)
            except ValueError as exc:  # a malformed key in `allow`
                return {"error": str(exc)}
            return reply

        return handle

    return {"connect": guarded(add_connect), "expose": guarded(add_expose),
            "remove": guarded(remove)}
