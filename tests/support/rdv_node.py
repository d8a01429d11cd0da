"""Test-only node for the NAT lab: drives `RendezvousClient` over a real UDP socket.

    python tests/support/rdv_node.py --server IP:PORT --secret HEX --private HEX \
        [--server-key HEX] [--names a,b] [--port N]

Prints one JSON line per event on stdout; reads commands on stdin, one a line: `start`,
`list`, `connect NAME`, `relay STATIC_HEX TEXT`, `leave`, `netcheck`, `quit`. Relayed datagrams
that arrive are printed as {"event": "Relayed", ...}. Without --server-key the node pins the
key the server's first COOKIE carries.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import time
from typing import Any

from rendezvous.protocol import Peer
from tunnel.node.netcheck import netcheck
from tunnel.path import rendezvous as rc


def ep(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def peer_json(peer: Peer) -> dict[str, Any]:
    return {"static": peer.static.hex(), "endpoint": f"{peer.endpoint[0]}:{peer.endpoint[1]}",
            "names": list(peer.names), "seen_ago": peer.seen_ago}


def event_json(event: rc.Event) -> dict[str, Any]:
    out: dict[str, Any] = {"event": type(event).__name__}
    if isinstance(event, rc.Registered):
        out["public"] = f"{event.public_endpoint[0]}:{event.public_endpoint[1]}"
        out["peers"] = [peer_json(x) for x in event.peers]
    elif isinstance(event, rc.PeerJoined):
        out.update(peer_json(event.peer))
    elif isinstance(event, rc.PeerLeft):
        out.update(static=event.static.hex(), names=list(event.names))
    elif isinstance(event, rc.Introduced):
        out.update(name=event.peer_name, static=event.peer_static.hex(),
                   public=f"{event.public_endpoint[0]}:{event.public_endpoint[1]}",
                   lan=[f"{h}:{p}" for h, p in event.lan_candidates])
    elif isinstance(event, rc.ListReceived):
        out["peers"] = [peer_json(x) for x in event.peers]
    elif isinstance(event, rc.RegistrationRefused):
        out.update(reason=event.reason, holder=event.holder_fingerprint)
    elif isinstance(event, rc.ConnectRefused):
        out.update(name=event.name, reason=event.reason)
    elif isinstance(event, rc.CookieReceived):
        out["public"] = f"{event.public_endpoint[0]}:{event.public_endpoint[1]}"
    elif isinstance(event, rc.ServerKeyLearned):
        out["key"] = event.key.hex()
    elif isinstance(event, rc.ServerKeyChanged):
        out.update(pinned=event.pinned.hex(), offered=event.offered.hex())
    return out


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def command(line: str, client: rc.RendezvousClient, sock: socket.socket,
            server: tuple[str, int], now: float) -> bool:
    """Run one stdin command; False to quit."""
    cmd, _, rest = line.partition(" ")
    if cmd == "start":
        client.start(now)
    elif cmd == "list":
        client.request_list(now)
    elif cmd == "connect":
        client.request_connect(rest, now)
    elif cmd == "relay":
        dest_hex, _, text = rest.partition(" ")
        envelope = client.wrap_relay(bytes.fromhex(dest_hex), text.encode())
        if envelope is None:
            emit({"event": "NoRelayToken", "static": dest_hex})
        else:
            sock.sendto(envelope, server)
    elif cmd == "leave":
        client.leave(now)
    elif cmd == "netcheck":
        emit({"event": "Netcheck", **netcheck(server, timeout=2.0).as_dict()})
    elif cmd == "quit":
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", type=ep, required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--private", required=True, help="the node's X25519 private key (hex)")
    ap.add_argument("--server-key", default=None, help="the server's public key (hex)")
    ap.add_argument("--names", default="")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--lan", default="")
    ap.add_argument("--refresh", type=float, default=rc.REFRESH_INTERVAL,
                    help="registration refresh interval in seconds (labs shorten it)")
    ap.add_argument("--trace", action="store_true", help="print every datagram sent (hex)")
    args = ap.parse_args()
    rc.REFRESH_INTERVAL = args.refresh
    names = tuple(n for n in args.names.split(",") if n)
    lan = tuple(ep(x) for x in args.lan.split(",") if x)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", args.port))
    server_key = bytes.fromhex(args.server_key) if args.server_key else None
    client = rc.RendezvousClient(bytes.fromhex(args.secret), bytes.fromhex(args.private), names,
                                 lan, args.server, server_key=server_key,
                                 counter_start=time.time_ns() // 1000)
    emit({"event": "Ready", "port": sock.getsockname()[1]})
    pending = b""
    while True:
        for data, dest in client.datagrams_to_send():
            sock.sendto(data, dest)
            if args.trace:
                emit({"event": "Sent", "type": data[0], "hex": data.hex()})
        while (event := client.next_event()) is not None:
            emit(event_json(event))
        timer = client.get_timer()
        wait = 1.0 if timer is None else max(0.0, min(1.0, timer - time.monotonic()))
        readable, _, _ = select.select([sock, sys.stdin], [], [], wait)
        now = time.monotonic()
        if sock in readable:
            data, src = sock.recvfrom(65536)
            addr = (str(src[0]), int(src[1]))
            if not client.receive_datagram(data, addr, now):
                relayed = client.unwrap_relay(data)
                if relayed is not None:
                    emit({"event": "Relayed", "src": relayed[0].hex(),
                          "data": relayed[1].decode("utf-8", "replace")})
        if sys.stdin in readable:
            # Raw reads: a buffered readline() would hide further lines from select().
            chunk = os.read(sys.stdin.fileno(), 65536)
            if not chunk:
                return 0
            pending += chunk
            while b"\n" in pending:
                raw, _, pending = pending.partition(b"\n")
                if not command(raw.decode().strip(), client, sock, args.server, now):
                    return 0
        timer = client.get_timer()
        if timer is not None and time.monotonic() >= timer:
            client.handle_timer(time.monotonic())


if __name__ == "__main__":
    raise SystemExit(main())
