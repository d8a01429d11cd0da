"""Tell systemd how a `Type=notify` service is doing: `READY=1` once it serves, `STATUS=...`
for `systemctl status`, without a dependency.

The protocol (sd_notify(3)): one datagram of newline-separated `KEY=value` assignments to the
AF_UNIX datagram socket named by $NOTIFY_SOCKET; a name starting with `@` is in the abstract
namespace (the `@` stands for a leading NUL byte). Without $NOTIFY_SOCKET (not under systemd)
every call does nothing. A failure to notify is logged and never stops the command: the
service manager then reports the missing readiness itself.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunnel.api import Tunnel

log = logging.getLogger(__name__)


def socket_address(name: str) -> str | bytes | None:
    """The address to send to for a $NOTIFY_SOCKET value; None for a kind we do not speak
    (systemd 254's `vsock:` for virtual machines)."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    if name.startswith("/"):
        return name
    return None


def notify(*assignments: str) -> bool:
    """Send `KEY=value` assignments as one datagram; True if one was sent."""
    name = os.environ.get("NOTIFY_SOCKET")
    if not name:
        return False
    address = socket_address(name)
    if address is None:
        log.debug("NOTIFY_SOCKET=%s is not a Unix socket; not notifying", name)
        return False
    # One line per assignment: a newline inside a value would start a bogus assignment.
    message = "\n".join(" ".join(text.split("\n")) for text in assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", name, exc.strerror or exc)
        return False
    return True


def ready(status: str) -> bool:
    """The service is up: what it runs, for `systemctl status`."""
    return notify("READY=1", f"STATUS={status}")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=stopping")


def service_status(tunnel: Tunnel) -> str:
    """One line for `systemctl status`: "exposing ssh-home, web; 1 of 2 connects up (db)"."""
    parts = []
    names = [exposed.service.name for exposed in tunnel.exposed]
    if names:
        parts.append("exposing " + ", ".join(names))
    if tunnel.connections:
        up = [c.name for c in tunnel.connections if c.link is not None and c.link.ready]
        parts.append(f"{len(up)} of {len(tunnel.connections)} connects up"
                     + (f" ({', '.join(up)})" if up else ""))
    return "; ".join(parts) or "running"
