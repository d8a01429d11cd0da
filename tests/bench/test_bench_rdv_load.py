"""The rendezvous load test's start-up check: one line, before any socket, when the descriptor
limit cannot hold a socket per simulated node (it used to die with a traceback at node 19,7xx)."""

from __future__ import annotations

import resource

import pytest

from bench.rdv_load import SPARE_DESCRIPTORS, descriptors_problem, main


def test_too_many_nodes_for_the_hard_limit_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return  # no limit to exceed: nothing to check on such a machine
    assert main(["--servers", "1", "--nodes-per-server", str(hard)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "open files" in err and "--nodes-per-server" in err


def test_a_fleet_within_the_hard_limit_raises_the_soft_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        assert descriptors_problem(2000) is None
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 2000 + SPARE_DESCRIPTORS
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
