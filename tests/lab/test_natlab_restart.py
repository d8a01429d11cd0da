"""Restarts, crashes and idle hours across real NATs (two port-restricted cones): each running
side finds the other again and its forwards carry data again, checked end to end by SHA-256.

Recovery is timed from the moment the new process is up (its "exposing" or "ready" line) to the
first upload that arrives intact: within 5 s after a clean stop, within 15 s after a crash
(WireGuard's rule: data with no authenticated answer for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT starts a
new handshake).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import LabFactory
from tests.support.tunnels import (
    ENV,
    LABTOOL,
    LOCAL_PORT,
    SERVICE_PORT,
    MiB,
    Tunnels,
    exposed,
    ready_line,
    upload,
)
from tunnel.channel.constants import IDLE_TIMEOUT, KEEPALIVES_PER_IDLE_TIMEOUT
from tunnel.path.manager import SILENCE_TIMEOUT

pytestmark = pytest.mark.natlab

PROBE_BYTES = 64 * 1024
CLEAN_RECOVERY = 5.0  # s, after a clean stop
CRASH_RECOVERY = 15.0  # s, after a crash


def first_intact_upload(tunnels: Tunnels, site_host: str, since: float, limit: float) -> float:
    """Upload small payloads until one arrives intact; seconds from `since` until it did."""
    deadline = since + limit + 10  # keep trying past the limit, to report how late it was
    while time.monotonic() < deadline:
        out = tunnels.lab.run(site_host, sys.executable, LABTOOL, "upload", str(LOCAL_PORT),
                              str(PROBE_BYTES), check=False, timeout=30)
        lines = out.stdout.strip().splitlines()
        if out.returncode == 0 and lines:
            result = json.loads(lines[-1])
            # A connection reset during the restart answers nothing: try again.
            if str(result.get("reply")) == f"{result['sha256']} {PROBE_BYTES}":
                return time.monotonic() - since
        time.sleep(0.1)
    raise AssertionError(f"no intact upload within {limit + 10:.0f} s")


def restart_exposer(tunnels: Tunnels, how: signal.Signals) -> float:
    """Stop the exposing process with `how`, start it again; the monotonic time it was up."""
    old = tunnels.exposers[-1]
    old.popen.send_signal(how)
    old.popen.wait(timeout=10)
    tunnels.expose(tunnels.lab.sites[0], "box")
    return time.monotonic()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "crash"])
def test_exposing_side_restarts_and_the_running_connect_carries_data_again(
        natlab: LabFactory, tmp_path: Path, how: signal.Signals) -> None:
    tunnels, _, laptop = exposed(natlab, tmp_path, ["cone", "cone"])
    connect = tunnels.connect(laptop, "box")
    ready_line(connect)
    upload(tunnels, laptop, MiB)
    up_at = restart_exposer(tunnels, how)
    limit = CLEAN_RECOVERY if how == signal.SIGTERM else CRASH_RECOVERY
    took = first_intact_upload(tunnels, laptop.host, up_at, limit)
    print(f"recovery after {how.name}: {took:.2f} s")  # noqa: T201 (seen with -s)
    assert took <= limit, f"{how.name}: data flowed again only after {took:.1f} s"
    upload(tunnels, laptop, 4 * MiB)  # and bulk works on the new path
    assert connect.popen.poll() is None  # the connect never gave up


def test_a_connection_cut_by_a_crash_is_reset_not_hung(natlab: LabFactory,
                                                       tmp_path: Path) -> None:
    tunnels, home_site, laptop = exposed(natlab, tmp_path, ["cone", "cone"], sink=False)
    lab = tunnels.lab
    held = lab.spawn(home_site.host, sys.executable, LABTOOL, "hold", str(SERVICE_PORT), env=ENV)
    held.expect_text("listening")
    ready_line(tunnels.connect(laptop, "box"))
    waiter = lab.spawn(laptop.host, sys.executable, LABTOOL, "wait-end", str(LOCAL_PORT), env=ENV)
    held.expect_text("accepted", timeout=15)
    up_at = restart_exposer(tunnels, signal.SIGKILL)
    # The connection was cut on the other side: once the peer is found again, its local end
    # sees the connection end instead of hanging on a stream nobody holds.
    result = json.loads(waiter.expect_text("ended", timeout=CRASH_RECOVERY + 10))
    assert result["ended"] == "reset", result  # never a clean EOF: that would look complete
    assert time.monotonic() - up_at < CRASH_RECOVERY, result


def test_connecting_side_restarts_and_connects_again(natlab: LabFactory,
                                                     tmp_path: Path) -> None:
    tunnels, _, laptop = exposed(natlab, tmp_path, ["cone", "cone"])
    first = tunnels.connect(laptop, "box")
    ready_line(first)
    upload(tunnels, laptop, MiB)
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(timeout=10)
    started = time.monotonic()
    second = tunnels.connect(laptop, "box")
    line = ready_line(second, timeout=CRASH_RECOVERY)
    assert "direct" in line, line
    took = first_intact_upload(tunnels, laptop.host, started, CLEAN_RECOVERY)
    print(f"recovery after a connect restart: {took:.2f} s")  # noqa: T201 (seen with -s)
    assert took <= CLEAN_RECOVERY
    upload(tunnels, laptop, 4 * MiB)


def test_both_sides_restart_at_once(natlab: LabFactory, tmp_path: Path) -> None:
    tunnels, home_site, laptop = exposed(natlab, tmp_path, ["cone", "cone"])
    first = tunnels.connect(laptop, "box")
    ready_line(first)
    upload(tunnels, laptop, MiB)
    for proc in (first, tunnels.exposers[0]):
        proc.popen.send_signal(signal.SIGTERM)
    for proc in (first, tunnels.exposers[0]):
        proc.popen.wait(timeout=10)
    tunnels.expose(home_site, "box")
    started = time.monotonic()  # both new processes are starting: the exposer is up
    ready_line(tunnels.connect(laptop, "box"), timeout=CRASH_RECOVERY)
    took = first_intact_upload(tunnels, laptop.host, started, CLEAN_RECOVERY)
    print(f"recovery after both restarted: {took:.2f} s")  # noqa: T201 (seen with -s)
    assert took <= CLEAN_RECOVERY
    upload(tunnels, laptop, 4 * MiB)


NEW_ADDRESS_RECOVERY = 30.0  # s, the soak's bound for a NAT reboot


def test_home_router_reboots_onto_a_new_public_address(natlab: LabFactory,
                                                       tmp_path: Path) -> None:
    """A home router that reboots often comes back with another address from its ISP: every
    mapping is gone, and the address the peer and the rendezvous knew leads nowhere."""
    tunnels, home_site, laptop = exposed(natlab, tmp_path, ["cone", "cone"])
    ready_line(tunnels.connect(laptop, "box"))
    upload(tunnels, laptop, MiB)
    time.sleep(3)  # idle: nothing in flight, so nothing on either side waits for an answer
    old_address = home_site.public_ip
    tunnels.lab.reboot_nat(home_site, new_address=True)
    rebooted = time.monotonic()
    assert home_site.public_ip != old_address
    took = first_intact_upload(tunnels, laptop.host, rebooted, NEW_ADDRESS_RECOVERY)
    print(f"data again {took:.2f} s after the reboot onto a new address")  # noqa: T201
    assert took <= NEW_ADDRESS_RECOVERY, f"data flowed again only after {took:.1f} s"
    # Direct again, to the new address (the relay would carry the data meanwhile too).
    path = ""
    while not path.startswith("direct") and time.monotonic() - rebooted < 60:
        status = tunnels.connector_status(laptop)
        path = str(status[0]["peers"][0]["path"])
        time.sleep(0.5)
    assert path.startswith(f"direct public {home_site.public_ip}:"), path
    upload(tunnels, laptop, 4 * MiB)


# A quiet channel PINGs a third of its idle timeout after its last packet; a PING unanswered for
# SILENCE_TIMEOUT is silence, and the peer is `reconnecting`. 5 s for the polls of `status` on a
# busy machine: the defect this guards against took 95 s.
CRASH_NOTICED = IDLE_TIMEOUT / KEEPALIVES_PER_IDLE_TIMEOUT + SILENCE_TIMEOUT + 5.0


def test_status_tells_that_an_unused_tunnels_peer_crashed_and_a_connection_waits_for_it(
        natlab: LabFactory, tmp_path: Path) -> None:
    """`ptunnel connect` is up and nobody has used it yet when the home box loses power: its
    `status` stops saying `direct` within a keepalive and a silence (it said so for 95 s while
    a channel that never carried a packet sent no keepalive). A connection made while home is
    down waits, and goes through once home is back (it took a stream on the dead process's
    channel, and was reset when the new process was found)."""
    tunnels, home_site, laptop = exposed(natlab, tmp_path, ["cone", "cone"])
    assert "direct" in ready_line(tunnels.connect(laptop, "box"))
    time.sleep(5)  # idle: the path's first probes are over
    exposer = tunnels.exposers[0]
    exposer.popen.send_signal(signal.SIGKILL)
    exposer.popen.wait(timeout=10)
    killed = time.monotonic()
    state = "direct"
    while state in ("direct", "relay") and time.monotonic() - killed < CRASH_NOTICED + 10:
        time.sleep(0.5)
        status = tunnels.connector_status(laptop)
        state = status[0]["peers"][0]["state"]
    took = time.monotonic() - killed
    print(f"status noticed the crash after {took:.1f} s: {state}")  # noqa: T201 (seen with -s)
    assert state.startswith("reconnecting"), state
    assert took <= CRASH_NOTICED, f"status said direct for {took:.1f} s after the crash"
    waiting = tunnels.lab.spawn(laptop.host, sys.executable, LABTOOL, "upload", str(LOCAL_PORT),
                                str(PROBE_BYTES), env=ENV)
    time.sleep(1)
    tunnels.expose(home_site, "box")
    result = json.loads(waiting.expect_text("sha256", timeout=CRASH_RECOVERY + 10))
    assert str(result["reply"]) == f"{result['sha256']} {PROBE_BYTES}", result


SETTLING = 15  # s after a transfer before a node is idle (path probes, the heap's first trim)


def wakeups(pid: int) -> int:
    """How often the process's threads have gone to sleep and been woken (voluntary context
    switches: each wait of the event loop that ended counts one)."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def test_an_idle_tunnel_stays_direct_and_quiet_for_90_seconds(natlab: LabFactory,
                                                              tmp_path: Path) -> None:
    tunnels, _, laptop = exposed(natlab, tmp_path, ["cone", "cone"])
    connect = tunnels.connect(laptop, "box")
    assert "direct" in ready_line(connect)
    upload(tunnels, laptop, MiB)
    nodes = [proc.popen.pid for proc in (connect, tunnels.exposers[0])]  # `ip netns exec` execs
    before = tunnels.rdv_bytes()
    # real time: the NAT mappings and the default keepalive are what is tested
    time.sleep(SETTLING)
    woken = [wakeups(pid) for pid in nodes]
    time.sleep(95 - SETTLING)
    crossed = tunnels.rdv_bytes() - before
    woken = [wakeups(pid) - count for pid, count in zip(nodes, woken, strict=True)]
    print(f"wake-ups in {95 - SETTLING} s idle (connecting, exposing): {woken}")  # noqa: T201
    started = time.monotonic()
    upload(tunnels, laptop, 64 * 1024)
    assert time.monotonic() - started < 1.5  # the first byte after the idle spell: at once
    exposer = tunnels.exposers[0]
    connect.events()
    exposer.events()  # collect every log line so far
    flaps = [line for line in [*connect.seen, *exposer.seen]
             if "went silent" in line or "relay via" in line]
    assert not flaps, flaps
    # Registration refreshes cross the rendezvous link; relayed data would be far more.
    assert crossed < 20_000, f"{crossed} bytes crossed the rendezvous link while idle"
    # An idle node sleeps: its keepalives, the probes that keep a second path fresh, its
    # registration refreshes and a look at its heap now and then wake it 6-7 times in 10 s
    # (a connecting node woke 211 times in these 80 s when it polled its peer every half second).
    assert max(woken) < 95 - SETTLING, (
        f"the connecting and exposing nodes woke {woken} times in {95 - SETTLING} s")
