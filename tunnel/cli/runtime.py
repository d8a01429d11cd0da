"""What the long-running commands share: node flags, the event loop, signals, the status socket.

`expose`, `connect` and `up` build a `Tunnel` from the merged config, run until a signal
(or `ptunnel stop`), and serve the control socket meanwhile: `status`, `ping`, forwards added
and removed by later commands (`tunnel.cli.forwards`), and `shutdown`.

How a command stops: SIGINT (Ctrl-C), SIGTERM or SIGHUP (its terminal closed) ends any command
at once, at any stage, with the same clean stop: its peers hear that it stops, where they would
find out from its silence up to 13 s later. A command started to ignore SIGHUP (`nohup`) goes on
ignoring it.

| commands                           | wait in                      | a signal                    |
|------------------------------------|------------------------------|-----------------------------|
| `netcheck`, `list`, `status`,      | select() or recv()           | raises `Interrupted` there  |
| `ping` through a running node      |                              |                             |
| `expose`, `connect`, `up`, `ping`, | any await: the rendezvous,   | cancels the main task, whose|
| `rendezvous` (under `run_async`)   | punching, relaying, a        | `finally` clauses close the |
|                                    | transfer, the daemon's wait  | tunnel; then `Interrupted`  |

`main` prints one line for `Interrupted` and exits with 128 + the signal number, 130 for SIGINT,
143 for SIGTERM and 129 for SIGHUP, the status a shell reports for a command a signal ended.

Every command that runs an event loop first fixes glibc's heap thresholds (`tunnel.cli.heap`: a
node opening 65,000-byte datagrams faulted each buffer in again), and while it runs gives the
heap's free pages back when it goes quiet after being busy, and at least every 30 s (a burst of
connections left megabytes free but resident). It also tunes the garbage collector
(`tunnel.cli.collector`): the objects start-up built are frozen out of its walks, and its youngest
generation waits for more allocations than a window of packets in flight keeps alive.
Before a long-running command starts, the soft RLIMIT_NOFILE is raised to the hard limit
(`raise_descriptor_limit`): every forwarded connection holds sockets, and the usual soft limit
of 1,024 is far below what a peer may open. Forwarding then budgets its sockets under the limit
it finds (`tunnel.forward.sockets`).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import os
import resource
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, ParamSpec, TypeVar

from tunnel.api import PingResult, Tunnel, TunnelError
from tunnel.cli import sdnotify
from tunnel.cli.arguments import endpoints_arg
from tunnel.cli.collector import tuned_collector
from tunnel.cli.context import Context
from tunnel.cli.control import ControlServer, Emit, error_reply, running
from tunnel.cli.control import Handler as RequestHandler
from tunnel.cli.forwards import forward_handlers
from tunnel.cli.heap import keep_freed_memory, trim_regularly
from tunnel.errors import RuntimeFailure, UserError

log = logging.getLogger(__name__)

# --- stopping ---------------------------------------------------------------------------------
# Read once, at import, before any handler of ours is in place: SIGHUP ignored from the start
# means the user ran us under `nohup` to outlive the terminal.
SIGNALS = tuple(signum for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
                if signum != signal.SIGHUP or signal.getsignal(signum) != signal.SIG_IGN)
# Closing a tunnel sends CLOSE frames and waits 50 ms for them to leave; a cleanup that takes
# longer than this is abandoned (the process is exiting anyway), so a stop stays under 1 s.
CLEANUP_GRACE = 0.5  # s

T = TypeVar("T")
P = ParamSpec("P")
Handler = Callable[[int, FrameType | None], Any] | int | None


class Interrupted(BaseException):
    """A stopping signal arrived (`SIGNALS`). A BaseException, as KeyboardInterrupt is, so that no
    `except Exception` on the way takes it for an error and carries on."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def message(self) -> str:
        if self.signum == signal.SIGINT:
            return "interrupted"
        return f"stopped ({signal.Signals(self.signum).name})"


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _restore(previous: dict[signal.Signals, Handler]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Inside, the stopping signals raise `Interrupted` wherever the main thread is; the
    handlers that were there before come back afterwards (tests call `main()` in-process)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        _restore(previous)


class _DaemonThreads(concurrent.futures.ThreadPoolExecutor):
    """The event loop's default executor: one daemon thread per call.

    The node runs its blocking netcheck (up to 3 s) in the default executor. A real
    ThreadPoolExecutor is joined when the loop closes and again when Python exits, so a
    command stopped during its first 3 s would wait for the netcheck. A daemon thread is
    simply left behind. (A ThreadPoolExecutor by type only: asyncio insists on one.)"""

    def submit(self, fn: Callable[P, T], /, *args: P.args,
               **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - the future carries it to the awaiting task
                future.set_exception(exc)

        threading.Thread(target=work, name="ptunnel-blocking", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to wait for: the threads are daemons."""


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` on uvloop until it returns; a stopping signal cancels it wherever it
    waits and, once its cleanup has run (at most CLEANUP_GRACE), raises `Interrupted`. Every
    command that runs a loop carries datagrams: the heap keeps what it frees (`heap`), and the
    garbage collector leaves start-up and the packets in flight alone (`collector`)."""
    trim_heap = keep_freed_memory()  # where we set the thresholds, we also trim (`heap`)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # uvloop is a dependency; this only guards odd platforms
        pass
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        with tuned_collector(), asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(_until_signal(main, trim_heap))
    finally:
        if threading.current_thread() is threading.main_thread():
            _restore(previous)  # closing the loop put the default handlers back


async def _until_signal(main: Callable[[], Coroutine[Any, Any, T]], trim_heap: bool) -> T:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(_DaemonThreads())
    task = loop.create_task(main())
    received: list[int] = []
    signalled = asyncio.Event()

    def on_signal(signum: int) -> None:
        log.debug("%s: stopping", signal.Signals(signum).name)
        root = logging.getLogger()
        if not root.isEnabledFor(logging.DEBUG):
            # The teardown's own news (streams reset as the tunnel closes) is not worth a line
            # after "interrupted"; warnings and errors still are.
            root.setLevel(max(root.level, logging.WARNING))
        received.append(signum)
        task.cancel()  # a second signal cancels again: that ends a cleanup that hangs
        signalled.set()

    for signum in SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    watcher = loop.create_task(signalled.wait())
    trimmer = loop.create_task(trim_regularly()) if trim_heap else None
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not received:
            return task.result()
        await asyncio.wait({task}, timeout=CLEANUP_GRACE)  # its `finally` clauses close up
        if not task.done():
            log.debug("cleanup still running after %.1f s; leaving it", CLEANUP_GRACE)
        elif not task.cancelled() and task.exception() is not None:
            log.debug("while stopping: %r", task.exception())
        raise Interrupted(received[0])
    finally:
        watcher.cancel()
        if trimmer is not None:
            trimmer.cancel()


# --- descriptors -----------------------------------------------------------------------------
# What "unlimited" becomes: Linux refuses a soft limit above fs.nr_open (1,048,576 by default).
NOFILE_WHEN_UNLIMITED = 1 << 20


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the (soft, hard) limits in force after.

    Never fails: a limit that cannot be raised stays, and forwarding budgets under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_WHEN_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.debug("descriptor limit stays %d (hard %d): %s", soft, hard, exc)
            return soft, hard
        log.debug("descriptor limit raised from %d to %d", soft, target)
        return target, hard
    log.debug("descriptor limit %d (hard %d)", soft, hard)
    return soft, hard


# --- the long-running commands ----------------------------------------------------------------
def add_node_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("node options")
    group.add_argument("--rendezvous", type=endpoints_arg, metavar="HOST:PORT[,HOST:PORT]",
                       help="rendezvous server, or several of one deployment tried in turn "
                       "(env PTUNNEL_RENDEZVOUS, config `rendezvous`)")
    group.add_argument("--direct-only", action="store_true", default=None,
                       help="never use the relay; fail with the NAT types found instead")
    group.add_argument("--keepalive", type=float, metavar="SECONDS",
                       help="persistent keepalive holding NAT mappings open (default 25, 0 = off)")
    group.add_argument("--congestion", choices=("bbr", "cubic", "newreno"),
                       help="congestion controller (default bbr)")


def build_tunnel(ctx: Context, allow: list[bytes] | None = None) -> Tunnel:
    config = ctx.config
    node_allow = list(config.get("allow") or []) + list(allow or [])
    servers = ctx.rendezvous_addrs()
    return Tunnel(
        home=ctx.home,
        identity=ctx.identity(),
        network_secret=ctx.network_secret(),
        rendezvous=list[tuple[str, int] | str](servers),
        rendezvous_key=ctx.rendezvous_key(servers[0]),
        allow=node_allow or None,
        direct_only=bool(config.get("direct_only")),
        keepalive=float(config.get("keepalive") or 0.0),
        congestion=str(config.get("congestion") or "bbr"),
    )


Reload = Callable[[], Awaitable[dict[str, Any]]]


def control_handlers(tunnel: Tunnel, stop: asyncio.Event | None = None,
                     reload: Reload | None = None) -> dict[str, RequestHandler]:
    """What the control socket serves; `shutdown` only when `stop` is given (it sets it);
    `reload` runs `up`'s (the other commands have no config file to read again)."""

    async def status(_request: dict[str, Any], _emit: Emit) -> dict[str, Any]:
        return tunnel.status()

    async def remote_ping(request: dict[str, Any], emit: Emit) -> dict[str, Any]:
        def on_result(seq: int, result: PingResult) -> None:
            emit({"reply": result.as_dict(seq)})  # the client prints each reply as it comes

        try:
            return await tunnel.ping(str(request["name"]), count=int(request.get("count", 5)),
                                     interval=float(request.get("interval", 0.5)),
                                     on_result=on_result)
        except UserError as exc:
            return error_reply(exc)

    async def shutdown(_request: dict[str, Any], _emit: Emit) -> dict[str, Any]:
        assert stop is not None
        log.info("stopping: asked by `ptunnel stop`")
        # After this reply has been written: the stop ends the task that serves it.
        asyncio.get_running_loop().call_soon(stop.set)
        return {"pid": os.getpid()}

    async def reload_config(_request: dict[str, Any], _emit: Emit) -> dict[str, Any]:
        if reload is None:
            raise RuntimeFailure(
                f"the running ptunnel (pid {os.getpid()}) was not started by `ptunnel up`, so it "
                "has no config file to read again; add and remove its forwards with `ptunnel "
                "expose`, `ptunnel connect` and `ptunnel stop NAME|PORT`")
        return await reload()

    handlers: dict[str, RequestHandler] = {"status": status, "ping": remote_ping,
                                           "reload": reload_config, **forward_handlers(tunnel)}
    if stop is not None:
        handlers["shutdown"] = shutdown
    return handlers


def run_tunnel(ctx: Context, tunnel: Tunnel, body: Callable[[Tunnel], Awaitable[Any]],
               reload: Reload | None = None) -> int:
    """Run `body(tunnel)` (which sets up exposes/connects), then serve until a signal, which
    raises `Interrupted` (during the set-up as well: nothing here waits out a timeout), or
    until `ptunnel stop`, which returns 0. `reload` answers `ptunnel reload`."""
    others = running(ctx.home)
    if others:
        pid = others[0][1].get("pid", "?")
        # Exit 1: the same command works once that one stops.
        raise RuntimeFailure(
            f"another ptunnel (pid {pid}) already runs with {ctx.home}: two nodes with one key "
            "would fight over their peers; add tunnels to it with `ptunnel connect` and "
            "`ptunnel expose`, stop it with `ptunnel stop`, or give this one its own PTUNNEL_HOME"
        )

    raise_descriptor_limit()
    stop = asyncio.Event()
    control = ControlServer(ctx.home, control_handlers(tunnel, stop, reload))

    async def main() -> int:
        try:
            await tunnel.start()
            # Before the set-up: `ptunnel status` shows a connect still waiting for its peer.
            await control.start()
            await _unless_stopped(body(tunnel), stop)
            sdnotify.ready(sdnotify.service_status(tunnel))  # systemd's Type=notify
            await stop.wait()  # until `ptunnel stop`, or a signal cancels this task
        finally:
            await control.close()
            await tunnel.close()
        return 0

    return run_async(main)


async def _unless_stopped(work: Awaitable[Any], stop: asyncio.Event) -> None:
    """Await `work`, unless `ptunnel stop` comes first (a set-up can wait for a long time)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()  # the set-up's own error, if any


__all__ = ["Interrupted", "TunnelError", "add_node_options", "build_tunnel", "interruptible",
           "run_async", "run_tunnel"]
