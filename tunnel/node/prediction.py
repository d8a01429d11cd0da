"""The extra sockets of the port-randomizing side of port prediction (`tunnel.path.prediction`).

Each socket is a separate NAT mapping. Packets that arrive on socket `i` from `addr` are given to
the node under the pseudo address `via_socket(i, addr)`, so the sessions, peers and channels keep
treating addresses as opaque values; the node sends to a pseudo address through `routes`, out of
socket `i` to the real address. Once one socket carries the path, the others are closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tunnel.addresses import Addr, via_socket
from tunnel.node.udp import OnDatagram, UdpEndpoint

log = logging.getLogger(__name__)


class PredictionSockets:
    """`count` extra UDP sockets toward `target`, and the routes of their pseudo addresses."""

    def __init__(self, count: int, target: Addr, deliver: OnDatagram,
                 on_drained: Callable[[], None] | None = None) -> None:
        self.target = target
        self.routes: dict[Addr, tuple[UdpEndpoint, Addr]] = {}
        self.sockets: list[UdpEndpoint] = []
        for index in range(count):
            try:
                endpoint = UdpEndpoint.bind(("0.0.0.0", 0), self._receiver(index, deliver),
                                            on_drained)
            except OSError as exc:  # out of file descriptors or ports: use what we have
                log.info("port prediction: opened %d of %d sockets (%s)", index, count, exc)
                break
            self.sockets.append(endpoint)
            self.routes[self._pseudo(index, target)] = (endpoint, target)

    def _receiver(self, index: int, deliver: OnDatagram) -> OnDatagram:
        def receive(data: bytes, addr: Addr, segment: int) -> None:
            deliver(data, self._pseudo(index, addr), segment)

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
