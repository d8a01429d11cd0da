"""The load generator against the real sink/echo server on 127.0.0.1 (bench/load.py, sink.py)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

from bench import load
from bench.procs import Child, json_field


@pytest.fixture(scope="module")
def sink_port() -> Iterator[int]:
    child = Child("sink", [sys.executable, "-m", "bench.sink"])
    try:
        yield child.wait_line(json_field("port", int), 10.0)
    finally:
        child.stop()


def test_bulk_counts_whole_records_confirmed_by_the_sink(sink_port: int) -> None:
    for streams in (1, 4):
        result = load.bulk(sink_port, 0.2, streams)
        assert result.bytes_moved >= streams * load.RECORD_PAYLOAD
        assert result.bytes_moved % load.RECORD_PAYLOAD == 0  # only whole records are sent
        assert 0.2 <= result.seconds < 10.0
        assert result.setup_retries == 0


def test_latency_and_first_byte(sink_port: int) -> None:
    samples = load.latency(sink_port, 200)
    assert len(samples) == 200
    assert all(0 < s < 1e6 for s in samples)
    first = load.first_byte(sink_port, 5.0)
    assert first is not None and first < 5.0


def test_idle_streams_are_open_end_to_end(sink_port: int) -> None:
    socks, failures = load.open_idle(sink_port, 20)
    try:
        assert len(socks) == 20 and failures == 0
        socks[7].sendall(b"ping")
        assert socks[7].recv(4) == b"ping"
    finally:
        for sock in socks:
            sock.close()


def test_a_dead_path_is_reported_not_hung() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        dead = holder.getsockname()[1]  # bound but not listening: connections are refused
        assert load.first_byte(dead, 1.0) is None
        with pytest.raises(load.LOAD_ERRORS):
            load.bulk(dead, 0.1, 1)
        with pytest.raises(load.LoadError, match="3 of 3 connections failed"):
            load.open_idle(dead, 5, max_failures=2)
        with pytest.raises(load.LoadError, match="only 0 of 5 open after 0 s"):
            load.open_idle(dead, 5, max_failures=10**6, budget=0.2)
