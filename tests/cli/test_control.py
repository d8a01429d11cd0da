"""`ptunnel status` and `ptunnel ping` talk to a running node over its 0600 control socket."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import uvloop

from tests.support.loopback import free_port, start_tcp_echo, world
from tunnel.cli.control import ControlServer, query, query_all, running
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
