"""A throw-away `redis-server` for tests: 127.0.0.1, a free port, a temporary directory.

`RedisServer.start()` runs Debian's `redis-server` with an append-only file synced at every
write (`appendfsync always`, as the store's docstring asks of a deployment: Redis writes and
syncs each change before it replies, so a SIGKILL loses nothing acknowledged) and waits until
it answers PING. Not the default, `everysec`: Redis postpones its write by up to 2 s while a
background fsync still runs, and replies meanwhile, so a SIGKILL can lose a change already
acknowledged (the likely cause of one CI failure of the Redis-restart test in
`tests/rendezvous/test_multi_server.py`: a name registered just before the kill was unknown
after it). `kill()` stops it (SIGKILL, or SIGTERM) and `start()` brings it back on the same
port and directory, the way an operator's restart would. `require_redis_server()`
skips a test when the binary is missing, unless CI is set (`CI=true` or
`PTUNNEL_REQUIRE_NETNS=1`, as `.ci/run` sets): there redis-server is installed, so missing it
is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.support.loopback import free_port

START_TIMEOUT = 10.0  # seconds for redis-server to answer PING (it loads its AOF first)


def require_redis_server() -> str:
    """The path of redis-server; skips (or fails in CI) when it is not installed."""
    path = shutil.which("redis-server")
    if path is not None:
        return path
    reason = "redis-server is not installed (Debian: apt-get install redis-server)"
    if os.environ.get("CI") == "true" or os.environ.get("PTUNNEL_REQUIRE_NETNS") == "1":
        pytest.fail(f"{reason}; CI must run the Redis tests")
    pytest.skip(reason)


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.binary = require_redis_server()
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.directory), "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:
                    pass  # not listening yet, or still loading its file
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        try:
            client.flushall()
        finally:
            client.close()
