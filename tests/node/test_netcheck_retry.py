"""The node learns how its NAT maps ports even when a netcheck goes unanswered, and learns it again
when its public endpoint moves (another network, a rebooted router): port prediction depends on it.

`netcheck` (blocking UDP to the rendezvous' two ports) is replaced by a scripted one; the node
under test is the real shell, on a socketless wire."""

from __future__ import annotations

import asyncio
import os

import pytest

import tunnel.node.node as node_module
from tests.support.socketless_node import socketless_node
from tunnel.addresses import Addr
from tunnel.node.netcheck import NetcheckResult
from tunnel.path import rendezvous as rc

UNANSWERED = NetcheckResult(True, ("203.0.113.5", 4000), ("203.0.113.5", 4000), None, 4000)
RANDOMIZING = NetcheckResult(True, ("203.0.113.5", 4000), ("203.0.113.5", 4000),
                             ("203.0.113.5", 5311), 4000)
PRESERVING = NetcheckResult(True, ("198.51.100.7", 4000), ("198.51.100.7", 4000),
                            ("198.51.100.7", 4000), 4000)


class ScriptedNetcheck:
    def __init__(self, *answers: NetcheckResult | OSError) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, server: Addr) -> NetcheckResult:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer


def test_a_netcheck_without_an_answer_is_run_again_until_it_tells(
        monkeypatch: pytest.MonkeyPatch) -> None:
    scripted = ScriptedNetcheck(UNANSWERED, OSError("network unreachable"), RANDOMIZING)
    monkeypatch.setattr(node_module, "netcheck", scripted)
    monkeypatch.setattr(node_module, "NETCHECK_RETRY_FIRST", 0.01)

    async def main() -> None:
        node = socketless_node(os.urandom(32))
        static = bytes([7]) * 32
        assert node._peer(static, 0.0) is not None and not node.peers[static].nat_randomizes
        await asyncio.wait_for(node._check_nat(), timeout=5)
        assert scripted.calls == 3 and node.nat_mapping == "endpoint-dependent"
        assert node.peers[static].nat_randomizes  # port prediction may start for peers there
        node._timer.cancel()

    asyncio.run(main())


def test_a_moved_public_endpoint_runs_the_netcheck_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    scripted = ScriptedNetcheck(RANDOMIZING, PRESERVING)
    monkeypatch.setattr(node_module, "netcheck", scripted)

    async def main() -> None:
        node = socketless_node(os.urandom(32))
        await node._check_nat()
        assert node.nat_mapping == "endpoint-dependent"
        node.rdv = rc.RendezvousClient(os.urandom(32), os.urandom(32), (), [],
                                       ("127.0.0.1", 9))
        for public in (("203.0.113.5", 4000), ("203.0.113.5", 4000), ("198.51.100.7", 4000)):
            node.rdv._events.append(rc.Registered(public, ()))
            node._drain_rendezvous(0.0)
        assert node._nat_check is not None
        await asyncio.wait_for(node._nat_check, timeout=5)
        assert scripted.calls == 2 and node.nat_mapping == "endpoint-independent"
        node._timer.cancel()

    asyncio.run(main())
