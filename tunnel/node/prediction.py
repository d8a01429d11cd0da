"""The extra sockets of the port-randomizing side of port prediction (`tunnel.path.prediction`).

Each socket is a separate NAT mapping. Packets that arrive on socket `i` from `addr` are given to
the node under the pseudo address `("<ip>|i", port)`, so the sessions, path managers and channels
above keep treating addresses as opaque values; sending to a pseudo address goes out of socket
`i` to the real address. Once one socket carries the path, the others are closed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from tunnel.addresses import Addr, relay_addr, via_socket
from tunnel.keys.netkeys import fingerprint
from tunnel.node import payloads as nw
from tunnel.node.peer import PeerLink
from tunnel.node.udp import UdpEndpoint
from tunnel.path.manager import Kind
from tunnel.path.prediction import SOCKETS, Opener, Prober

if TYPE_CHECKING:
    from tunnel.node.node import Node

log = logging.getLogger(__name__)


class SpraySockets:
    def __init__(self, count: int, target: Addr,
                 deliver: Callable[[bytes, Addr], None]) -> None:
        self.target = target
        self.routes: dict[Addr, tuple[UdpEndpoint, Addr]] = {}
        self.sockets: list[UdpEndpoint] = []
        for index in range(count):
            try:
                endpoint = UdpEndpoint.bind(("0.0.0.0", 0), self._receiver(index, deliver))
            except OSError as exc:  # out of file descriptors or ports: use what we have
                log.info("birthday punch: opened %d of %d sockets (%s)", index, count, exc)
                break
            self.sockets.append(endpoint)
            self.routes[self._pseudo(index, target)] = (endpoint, target)

    def _receiver(self, index: int,
                  deliver: Callable[[bytes, Addr], None]) -> Callable[[bytes, Addr], None]:
        def receive(data: bytes, addr: Addr) -> None:
            deliver(data, self._pseudo(index, addr))

        return receive

    def _pseudo(self, index: int, addr: Addr) -> Addr:
        pseudo = via_socket(index, addr)
        if pseudo not in self.routes and index < len(self.sockets):
            self.routes[pseudo] = (self.sockets[index], addr)
        return pseudo

    def targets(self) -> list[Addr]:
        """The pseudo address of the peer through every socket (to open every mapping)."""
        return [self._pseudo(index, self.target) for index in range(len(self.sockets))]

    def keep_only(self, pseudo: Addr) -> None:
        """The path runs through `pseudo`'s socket: close every other one."""
        route = self.routes.get(pseudo)
        keep = route[0] if route is not None else None
        for endpoint in self.sockets:
            if endpoint is not keep:
                endpoint.close()
        self.sockets = [keep] if keep is not None else []
        self.routes = {a: r for a, r in self.routes.items() if r[0] is keep}

    def close(self) -> None:
        for endpoint in self.sockets:
            endpoint.close()
        self.sockets = []
        self.routes = {}


def _peer_public(link: PeerLink) -> Addr | None:
    """The peer's public endpoint as the rendezvous saw it."""
    for candidate in link.path.candidates.values():
        if candidate.kind == Kind.PUBLIC:
            return candidate.addr
    return None


class BirthdayPunch:
    """Drives `tunnel.path.prediction` for the node's links: the extra sockets on the randomizing
    side, the random-port pings on the other, coordinated through the relay."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def drive(self, link: PeerLink, direct: bool, now: float) -> None:
        """Drive a birthday punch on either side: open and refresh, or probe, until it works."""
        path = link.path.path
        if (self.node.nat_mapping == "endpoint-dependent" and not link.birthday_tried
                and path is not None and not path.direct):
            public = _peer_public(link)
            if public is not None:
                link.birthday_tried = True
                link.spray = SpraySockets(SOCKETS, public, self.node._on_datagram)
                self.node._routes.update(link.spray.routes)
                link.opener = Opener(now)
                log.info("our NAT randomizes ports: %d extra sockets toward %s, asking %s to "
                         "probe them", len(link.spray.sockets), public, fingerprint(link.static))
                request = bytes((nw.PAYLOAD_BIRTHDAY,))
                self.node._seal_to(link, request, relay_addr(link.static), now)
        if link.opener is not None and link.spray is not None:
            if direct or link.opener.expired(now):
                self._end_spray(link)
            elif link.opener.send_due(now):
                for target in link.spray.targets():
                    self.node._send_ping(link, target, now)
        if link.prober is not None:
            if direct:
                link.prober.stop()
            for addr in link.prober.due(now):
                self.node._send_ping(link, addr, now)
            if link.prober.stopped:
                log.info("birthday probing of %s ended after %d pings (%s)",
                         fingerprint(link.static), link.prober.sent,
                         "direct path found" if direct else "no port answered")
                link.prober = None

    def on_request(self, link: PeerLink, now: float) -> None:
        """The peer's NAT randomizes ports and it opened sockets to us: guess its ports."""
        path = link.path.path
        public = _peer_public(link)
        randomizing = self.node.nat_mapping == "endpoint-dependent"
        if (link.prober is not None or public is None or randomizing
                or (path is not None and path.direct)):
            return  # already probing, nowhere to probe, or both sides randomize: no chance
        link.prober = Prober(public[0], now, os.urandom)
        log.info("probing random ports of %s for %s (birthday punch)", public[0],
                 fingerprint(link.static))

    def _end_spray(self, link: PeerLink) -> None:
        assert link.spray is not None
        path = link.path.path
        winner = path.addr if path is not None and path.direct else None
        for pseudo in link.spray.routes:
            self.node._routes.pop(pseudo, None)
        if winner is not None and winner in link.spray.routes:
            link.spray.keep_only(winner)
            self.node._routes.update(link.spray.routes)
            log.info("birthday punch to %s succeeded through %s", fingerprint(link.static),
                     winner)
        else:
            link.spray.close()
            link.spray = None
        link.opener = None
