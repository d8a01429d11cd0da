"""`ptunnel status` and `ptunnel ping` talk to a running node over its 0600 control socket."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import uvloop

from tests.support.loopback import free_port, start_tcp_echo, world
from tunnel.cli.control import ControlServer, Emit, query, query_all, running
from tunnel.cli.runtime import control_handlers


def test_status_and_ping_through_the_control_socket(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            _server, service_port = await start_tcp_echo()
            exposer, connector = w.tunnel(), w.tunnel()
            await exposer.expose(service_port, "echo")
            await connector.connect("echo", free_port())
            control = ControlServer(connector.home, control_handlers(connector))
            await control.start()
            try:
                assert stat.S_IMODE(control.path.stat().st_mode) == 0o600
                loop = asyncio.get_running_loop()
                statuses = await loop.run_in_executor(None, query_all, connector.home)
                assert len(statuses) == 1
                peer = statuses[0]["peers"][0]
                assert peer["name"] == "echo" and peer["direct"] is True
                assert statuses[0]["connections"][0]["name"] == "echo"
                path = (await loop.run_in_executor(None, running, connector.home))[0][0]
                summary = await loop.run_in_executor(
                    None, lambda: query(path, {"cmd": "ping", "name": "echo", "count": 3,
                                               "interval": 0.05}, 30))
                assert summary is not None and summary["received"] == 3, summary
                bogus = await loop.run_in_executor(None, lambda: query(path, {"cmd": "nope"}))
                assert bogus is not None and "unknown request" in bogus["error"]
            finally:
                await control.close()
            assert not control.path.exists()
            assert await loop.run_in_executor(None, query_all, connector.home) == []

    uvloop.run(main())


def ask(path: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    return query(path, request)


def test_malformed_requests_get_one_line_errors_and_change_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            node = w.tunnel()
            await node.start()
            control = ControlServer(node.home, control_handlers(node))
            await control.start()
            loop = asyncio.get_running_loop()
            try:
                requests: list[dict[str, Any]] = [
                    {"cmd": "connect"}, {"cmd": "connect", "name": "x", "port": "1"},
                    {"cmd": "expose", "name": "Bad Name", "host": "127.0.0.1", "port": 1},
                    {"cmd": "expose", "name": "web", "host": "127.0.0.1", "port": 1,
                     "allow": ["not a key"]},
                    {"cmd": "remove", "what": 5}, {"cmd": "remove", "what": "nope"},
                    {"cmd": "ping", "name": "x", "count": "many"},
                    {"cmd": ["status"]}, {"cmd": "status", "x": 1}]
                for request in requests:
                    reply = await loop.run_in_executor(None, ask, control.path, request)
                    assert reply is not None, request
                    if request == {"cmd": "status", "x": 1}:
                        assert "error" not in reply
                        continue
                    assert isinstance(reply.get("error"), str) and "\n" not in reply["error"], (
                        request, reply)
                assert node.forwards() == [] and node.node.options.names == ()
            finally:
                await control.close()

    uvloop.run(main())


def test_a_client_that_goes_away_cancels_its_request(tmp_path: Path) -> None:
    """Ctrl-C on `ptunnel connect` handed to a running node: the node stops waiting for it."""

    async def main() -> None:
        cancelled = asyncio.Event()

        async def forever(_request: dict[str, Any], _emit: Emit) -> dict[str, Any]:
            try:
                await asyncio.Event().wait()
            finally:
                cancelled.set()
            return {}

        tmp_path.chmod(0o700)
        control = ControlServer(tmp_path, {"connect": forever})
        await control.start()
        try:
            reader, writer = await asyncio.open_unix_connection(str(control.path))
            writer.write(json.dumps({"cmd": "connect"}).encode() + b"\n")
            await writer.drain()
            await asyncio.sleep(0.1)
            assert not cancelled.is_set()
            writer.close()  # the client is interrupted
            await asyncio.wait_for(cancelled.wait(), 5)
            assert await reader.read() == b""  # and gets no reply
        finally:
            await control.close()

    uvloop.run(main())


def test_remove_by_name_or_port_and_an_ambiguous_name(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            _server, service_port = await start_tcp_echo()
            exposer, connector = w.tunnel(), w.tunnel()
            await exposer.expose(service_port, "echo")
            first, second = free_port(), free_port()
            await connector.connect("echo", first)
            await connector.connect("echo", second)
            control = ControlServer(connector.home, control_handlers(connector))
            await control.start()
            loop = asyncio.get_running_loop()
            try:
                reply = await loop.run_in_executor(None, ask, control.path,
                                                   {"cmd": "remove", "what": "ECHO"})
                assert reply == {"error": f"'ECHO' names 2 forwards (connect 'echo' on "
                                          f"127.0.0.1:{first}, connect 'echo' on 127.0.0.1:"
                                          f"{second}); stop one by its port", "exit_code": 2}
                reply = await loop.run_in_executor(None, ask, control.path,
                                                   {"cmd": "remove", "what": str(second)})
                assert reply is not None and reply["removed"] == (
                    f"connect 'echo' on 127.0.0.1:{second}")
                (left,) = connector.status()["forwards"]
                assert left["listen"] == f"127.0.0.1:{first}" and left["origin"] == "api"
            finally:
                await control.close()

    uvloop.run(main())
