"""Fixtures of the rendezvous tests: one throw-away redis-server for the session, flushed
before each test that asks for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redisserver import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty Redis (the session's server, flushed)."""
    if redis_server.proc is None:  # a test killed it and did not bring it back
        redis_server.start()
    redis_server.flush()
    return redis_server.url
