"""The local control socket: `ptunnel status` asks running instances how they are doing.

Each running `expose`, `connect` or `up` listens on a Unix socket
`$PTUNNEL_HOME/run/<pid>.sock` of mode 0600 (in a directory of mode 0700), so only the user who
runs ptunnel can query it. The protocol is one JSON request line, then any number of event
lines ``{"event": {...}}`` (a ping's replies as they come), then one JSON reply line:

| request `cmd` | what the running node does                    | reply                         |
|---------------|-----------------------------------------------|-------------------------------|
| `status`      |                                               | the instance's status object  |
| `ping`        | pings `name` (`count`, `interval`); an event  | the ping summary              |
|               | per reply                                     |                               |
| `connect`     | adds a connect (`ptunnel connect` while a     | `ready` (its ready line) or   |
|               | node runs)                                    | `error`                       |
| `expose`      | adds an expose                                | `exposing` or `error`         |
| `remove`      | removes the forward named by `what` (a name   | `removed` or `error`          |
|               | or a port)                                    |                               |
| `shutdown`    | stops the node, as SIGTERM would, exit 0      | `pid`                         |

So `ptunnel ping`, `connect` and `expose` use the running node instead of starting a second node
with the same key, which would fight it for the peer's session. A client that goes away (Ctrl-C)
cancels its request: a connect it was waiting for is not left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tunnel.errors import UserError, path_error
from tunnel.keys.identity import HOME_FIX

log = logging.getLogger(__name__)

RUN_DIR = "run"
MAX_REQUEST = 4096  # bytes; a request is one small JSON line
QUERY_TIMEOUT = 2.0  # seconds; a live instance answers status in milliseconds
MAX_SOCKET_PATH = 107  # bytes; sockaddr_un's sun_path on Linux, less its terminating NUL
# Sends one event line to the client while a request runs (a ping's replies; a few small lines,
# so no backpressure is needed).
Emit = Callable[[dict[str, Any]], None]
Handler = Callable[[dict[str, Any], Emit], Awaitable[dict[str, Any]]]


def run_dir(home: Path) -> Path:
    path = home / RUN_DIR
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)
    except OSError as exc:
        raise path_error(exc, f"create the directory of the control sockets {path}",
                         HOME_FIX) from None
    return path


class ControlServer:
    """Serves status requests for one running instance."""

    def __init__(self, home: Path, handlers: dict[str, Handler]) -> None:
        """Checks the socket's path at once, before the instance starts anything."""
        self.path = run_dir(home) / f"{os.getpid()}.sock"
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise UserError(f"cannot create the control socket {self.path}: the path is longer "
                            f"than a Unix socket's {MAX_SOCKET_PATH} bytes; use a shorter "
                            "PTUNNEL_HOME (or --home)")
        self._handlers = handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        old_umask = os.umask(0o177)  # the socket is created 0600: no window where others connect
        try:
            self.path.unlink(missing_ok=True)
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
            self.path.chmod(0o600)
        except OSError as exc:
            raise path_error(exc, f"create the control socket {self.path}", HOME_FIX) from None
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(OSError):
                await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), QUERY_TIMEOUT)
            try:
                request = json.loads(line[:MAX_REQUEST] or b"{}")
            except json.JSONDecodeError:
                request = {}
            command = request.get("cmd") if isinstance(request, dict) else None
            handler = self._handlers.get(str(command))
            if handler is None:
                reply: dict[str, Any] | None = {
                    "error": f"unknown request; expected one of "
                             f"{', '.join(sorted(self._handlers))}"}
            else:
                reply = await self._run(handler, request, reader, writer)
            if reply is not None:
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("control client went away: %s", exc)
        finally:
            writer.close()

    @staticmethod
    async def _run(handler: Handler, request: dict[str, Any], reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> dict[str, Any] | None:
        """The handler's reply; None if the client went away first (the handler is then
        cancelled: nobody waits for what it was doing)."""

        def emit(event: dict[str, Any]) -> None:
            if not writer.is_closing():
                writer.write(json.dumps({"event": event}).encode() + b"\n")

        work = asyncio.ensure_future(handler(request, emit))
        # A client sends nothing after its request: end of file means it has gone.
        gone = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and not gone.exception() and gone.result():
                await work  # a byte more than the request: odd, but not a departure
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await work
                log.debug("control client went away; request %s cancelled", request.get("cmd"))
        if work.cancelled():
            return None
        error = work.exception()
        if isinstance(error, UserError):
            return error_reply(error)
        if isinstance(error, ValueError | TypeError | KeyError):
            # A request of the right kind with wrong fields: the client's mistake, one line.
            log.debug("malformed %s request", request.get("cmd"), exc_info=error)
            return {"error": f"malformed {request.get('cmd')} request: {error!s}"}
        return work.result()  # anything else is a bug: raised, and logged with its traceback


def error_reply(error: UserError) -> dict[str, Any]:
    """A UserError as a reply: its line, and the exit status the client's command ends with."""
    return {"error": error.message, "exit_code": error.exit_code}


def query_all(home: Path) -> list[dict[str, Any]]:
    """Status of every instance running under this home; stale sockets are removed."""
    return [reply for _path, reply in running(home)]


def running(home: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(socket, status) of every live instance under this home; stale sockets are removed."""
    directory = home / RUN_DIR
    if not directory.is_dir():
        return []
    results = []
    for path in sorted(directory.glob("*.sock")):
        reply = query(path)
        if reply is None:
            path.unlink(missing_ok=True)  # its process is gone
        else:
            results.append((path, reply))
    return results


def query(path: Path, request: dict[str, Any] | None = None, timeout: float = QUERY_TIMEOUT,
          on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any] | None:
    """Send one request (status by default) and return the reply, calling `on_event` for each
    event line before it; None if nothing answers there. `timeout`: the longest silence."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(request or {"cmd": "status"}).encode() + b"\n")
            with sock.makefile("rb") as lines:
                for line in lines:
                    message = _decode(line)
                    if message is None:
                        return None
                    event = message.get("event")
                    if not isinstance(event, dict):
                        return message
                    if on_event is not None:
                        on_event(event)
    except OSError:
        return None
    return None


def _decode(line: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None
