"""Forwarding stays below the process's descriptor limit (issue 12, finding 8).

The end-to-end test runs the exposing node as a real `ptunnel expose` process whose
RLIMIT_NOFILE is lowered to LIMIT, opens more connections through it than its budget allows,
and checks that the node refuses the extras with a reset the connecting side can explain, keeps
serving the others, and serves new connections again once the first ones close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import subprocess
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop

from tests.support import cli
from tests.support.bare_peer import bare_peer
from tests.support.loopback import free_port, start_tcp_echo, world
from tunnel.forward import wire
from tunnel.forward.bridge import StreamBridge
from tunnel.forward.exposing import ExposedService, ExposingSide
from tunnel.forward.sockets import SocketBudget, budget_for
from tunnel.keys.identity import load_network_secret

LIMIT = 160  # descriptors of the exposing process: a budget of 80 forwarded connections
EXTRA = 40  # connections past the budget


def test_budget_leaves_headroom_under_every_limit() -> None:
    assert budget_for(1024) == 1024 - 320
    assert budget_for(LIMIT) == LIMIT // 2
    assert budget_for(0) == 0


def test_budget_refuses_past_it_and_logs_once_a_burst(caplog: pytest.LogCaptureFixture) -> None:
    budget = SocketBudget(10)
    with caplog.at_level(logging.DEBUG, logger="tunnel.forward.sockets"):
        assert all(budget.acquire(0.0, "a stream") for _ in range(5))
        assert not budget.acquire(1.0, "a stream") and not budget.acquire(2.0, "a stream")
        budget.release()
        assert budget.acquire(3.0, "a stream")
        assert not budget.acquire(20.0, "a stream")  # a new burst
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and budget.refused == 3 and budget.in_use == 5
    assert "descriptor limit of 10" in warnings[0].getMessage()


async def _echoed(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection through the tunnel proven by one echoed byte, or None if it was refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"x")
        if await asyncio.wait_for(reader.read(1), 20) == b"x":
            return reader, writer
    except (ConnectionError, TimeoutError):
        pass
    writer.close()
    return None


async def _wait_for_line(path: Path, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, path.read_text()
        await asyncio.sleep(0.05)


def _lower_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def test_streams_past_the_descriptor_budget_are_refused_then_served_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = cli.init(tmp_path / "exposer")
    secret = load_network_secret(home)
    assert secret is not None
    budget = budget_for(LIMIT)
    output = tmp_path / "exposer.log"
    reason = wire.reset_reason(wire.RESET_TOO_MANY_CONNECTIONS)

    async def main() -> None:
        async with world(tmp_path) as w:
            w.networks["home"] = secret
            server, service_port = await start_tcp_echo()
            with output.open("w") as out:
                exposer = subprocess.Popen(
                    cli.command("expose", str(service_port), "--as", "echo", "--home", str(home),
                                "--rendezvous", f"127.0.0.1:{w.rendezvous[1]}"),
                    env=cli.ENV, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_lower_limit)
            try:
                await _wait_for_line(output, "exposing")
                local = free_port()
                await w.tunnel().connect("echo", local)
                opened = await asyncio.gather(*(_echoed(local) for _ in range(budget + EXTRA)))
                held = [c for c in opened if c is not None]
                assert len(held) == budget
                assert exposer.poll() is None
                # Each extra was reset by the exposer with the reason, and the connector says it.
                await asyncio.sleep(0.2)
                assert sum(reason in r.getMessage() for r in caplog.records) == EXTRA
                for _reader, writer in held:
                    writer.close()
                # Served again once they close (the exposer releases each as its socket closes).
                deadline = time.monotonic() + 20
                while True:
                    again = await asyncio.gather(*(_echoed(local) for _ in range(20)))
                    if all(c is not None for c in again) or time.monotonic() > deadline:
                        break
                    for c in again:
                        if c is not None:
                            c[1].close()
                    await asyncio.sleep(0.5)
                assert all(c is not None for c in again)
                assert exposer.poll() is None
            finally:
                exposer.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    exposer.wait(10)
                exposer.kill()
                server.close()

    with caplog.at_level(logging.INFO, logger="tunnel.forward.bridge"):
        uvloop.run(main())
    log = output.read_text()
    # One warning for the first burst; the re-opening rounds may start a second one.
    assert 1 <= log.count("refusing a stream") <= 2, log
    assert "Traceback" not in log


@dataclass
class _Owner:
    """What `ExposingSide` needs of a forwarder, with a budget of two sockets."""

    node: Any = None
    bridges: dict[tuple[bytes, int], StreamBridge] = field(default_factory=dict)
    sockets: SocketBudget = field(default_factory=lambda: SocketBudget(4))


def test_udp_flows_past_the_budget_are_dropped_and_expiry_gives_sockets_back() -> None:
    owner = _Owner()
    jobs: list[Coroutine[Any, Any, None]] = []
    side = ExposingSide(owner, jobs.append)
    side.services["game"] = ExposedService("game", ("127.0.0.1", 9), udp=True)
    link = bare_peer(b"p" * 32)
    for flow in range(5):
        side.on_datagram(link, "game", flow, b"hello")
    assert len(side.udp_flows) == 2 and owner.sockets.in_use == 2 and owner.sockets.refused == 3
    for job in jobs:
        job.close()  # never run: no socket was opened
    side.expire_idle_flows(time.monotonic() + 3600)
    assert not side.udp_flows and owner.sockets.in_use == 0
    side.on_datagram(link, "game", 9, b"again")
    assert len(side.udp_flows) == 1
    jobs[-1].close()
