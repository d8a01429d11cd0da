"""The NAT lab itself behaves like the NATs it claims to be (RFC 4787 filtering and mapping)."""

from __future__ import annotations

import sys
import time

import pytest

from lab.netns import RDV_IP
from tests.conftest import LabFactory

pytestmark = pytest.mark.natlab

# Open a mapping by sending to the rendezvous host, then wait for anything on the same socket.
RECEIVER = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5000))
s.sendto(b"open", ("{RDV_IP}", 9))
s.settimeout(2.5)
try:
    data, src = s.recvfrom(100)
    print("got", data.decode(), src[0])
except TimeoutError:
    print("nothing")
"""
SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(10):
    s.sendto(b"unsolicited", (sys.argv[1], 5000))
    time.sleep(0.1)
"""


@pytest.mark.parametrize(("kind", "reachable"), [("cone", False), ("symmetric", False),
                                                 ("fullcone", True)])
def test_unsolicited_inbound_is_filtered_except_by_full_cone(natlab: LabFactory, kind: str,
                                                             reachable: bool) -> None:
    lab = natlab([kind, "none"])
    target, stranger = lab.sites
    receiver = lab.spawn(target.host, sys.executable, "-c", RECEIVER)
    time.sleep(0.5)  # the mapping exists once "open" has left
    lab.run(stranger.host, sys.executable, "-c", SENDER, target.public_ip)
    assert receiver.popen.wait(timeout=10) == 0
    line = receiver.expect_text("", timeout=2.0)  # its one output line
    assert line.startswith("got unsolicited") is reachable, line


def test_symmetric_nat_maps_each_destination_to_a_new_port(natlab: LabFactory) -> None:
    lab = natlab(["symmetric"])
    site = lab.sites[0]
    probe = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 6000))
for port in (7, 8, 9):
    s.sendto(b"x", ("{RDV_IP}", port))
"""
    lab.run(site.host, sys.executable, "-c", probe)
    table = lab.run(site.router, "conntrack", "-L", "-p", "udp", check=False).stdout
    # Each entry: original tuple, then reply tuple; the reply's dport is the mapped port.
    mapped = {[f for f in line.split() if f.startswith("dport=")][-1]
              for line in table.splitlines() if "sport=6000" in line}
    assert len(mapped) == 3, table
