"""The sink's record framing (bench/sinkproto.py) and the /proc parsers (bench/procs.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench.procs import parse_listening_ports, parse_proc_stat, parse_status_kib
from bench.sinkproto import END_RECORD, TOTAL, AckReader, SinkCounter, record


def stream_of(sizes: list[int]) -> bytes:
    return b"".join(record(n) for n in sizes) + END_RECORD


@given(st.lists(st.integers(1, 3000), max_size=8), st.lists(st.integers(1, 5000), max_size=30))
def test_counter_totals_payload_however_the_stream_is_split(sizes: list[int],
                                                            cuts: list[int]) -> None:
    data = stream_of(sizes) + b"trailing junk is ignored"
    counter = SinkCounter()
    pos = 0
    completed = 0
    for cut in [*cuts, len(data)]:
        completed += counter.feed(data[pos:pos + cut])
        pos += cut
        if counter.finished:
            break
    assert counter.finished
    assert counter.total == sum(sizes)
    assert completed == len(sizes) + 1  # every record and the end record, each counted once


def test_counter_is_not_finished_before_the_end_record() -> None:
    counter = SinkCounter()
    assert counter.feed(stream_of([10, 20])[:-1]) == 2
    assert counter.total == 30 and not counter.finished
    assert counter.feed(b"\x00") == 1
    assert counter.finished


@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=20), st.integers(1, 9))
def test_ack_reader_keeps_the_latest_complete_total(totals: list[int], piece: int) -> None:
    data = b"".join(TOTAL.pack(t) for t in sorted(totals))
    reader = AckReader()
    seen = [reader.feed(data[i:i + piece]) for i in range(0, len(data), piece)]
    assert seen[-1] == max(totals)
    assert seen == sorted(seen)  # never goes back, never reports a half-read total


def test_proc_stat_parser_copes_with_spaces_and_parens_in_the_name() -> None:
    line = ("4242 (node (x) y) S 17 4242 4242 0 -1 4194560 100 0 0 0 "
            "250 50 7 3 20 0 11 0 12345 1000000 2000 18446744073709551615")
    stat = parse_proc_stat(line)
    assert (stat.pid, stat.ppid, stat.cpu_ticks) == (4242, 17, 250 + 50 + 7 + 3)


def test_status_and_listening_parsers() -> None:
    status = "Name:\tssh\nVmHWM:\t   11776 kB\nVmRSS:\t    9000 kB\n"
    assert parse_status_kib(status, "VmHWM") == 11776
    assert parse_status_kib(status, "VmSwap") is None
    tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n"
        "   1: 0100007F:A000 0100007F:1F90 01 00000000:00000000\n"
    )
    assert parse_listening_ports(tcp) == {8080}
