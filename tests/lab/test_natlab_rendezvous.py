"""The rendezvous server and node client across real Linux NATs (network namespaces).

The server runs in its own namespace on a "public" address; each node runs
`tests/support/rdv_node.py` (the real `RendezvousClient` over a real UDP socket) behind a NAT
of the given kind.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.netns import RDV_IP, Lab, Proc
from tests.conftest import LabFactory
from tunnel.keys.netkeys import fingerprint
from tunnel.session.crypto import public_key

pytestmark = pytest.mark.natlab

ROOT = Path(__file__).resolve().parents[2]
NODE = str(ROOT / "tests" / "support" / "rdv_node.py")
ENV = {"PYTHONPATH": str(ROOT)}
SERVER = f"{RDV_IP}:7000"
NET = bytes(range(32))
OTHER = bytes(range(100, 132))


def pub(private: bytes) -> str:
    """The static key (hex) of a node started with this private key, as events show it."""
    return public_key(private).hex()


def start_server(lab: Lab, db: Path, *extra: str) -> Proc:
    proc = lab.spawn(lab.rdv, sys.executable, "-m", "rendezvous.server", "--listen", SERVER,
                     "--db", str(db), *extra, env=ENV)
    proc.expect_text("rendezvous listening")
    return proc


def start_node(lab: Lab, ns: str, names: str, static: bytes, secret: bytes = NET,
               register: bool = True) -> Proc:
    proc = lab.spawn(ns, sys.executable, NODE, "--server", SERVER, "--secret", secret.hex(),
                     "--private", static.hex(), "--names", names, "--refresh", "2", env=ENV)
    proc.expect("Ready")
    if register:
        proc.send("start")
    return proc


def host_of(ev: dict[str, Any]) -> str:
    return str(ev["public"]).rpartition(":")[0]


def test_cone_node_learns_the_nat_public_address(natlab: LabFactory, tmp_path: Path) -> None:
    lab = natlab(["cone"])
    start_server(lab, tmp_path / "rdv.db")
    node = start_node(lab, lab.sites[0].host, "ssh-home", b"\x01" * 32)
    reg = node.expect("Registered")
    assert host_of(reg) == lab.sites[0].public_ip  # 203.0.113.10, not 10.1.0.2
    assert host_of(reg) != lab.sites[0].host_ip


def test_members_see_each_other_and_joins_and_leaves(natlab: LabFactory, tmp_path: Path) -> None:
    lab = natlab(["cone", "symmetric"])
    start_server(lab, tmp_path / "rdv.db")
    a = start_node(lab, lab.sites[0].host, "ssh-home", b"\x0a" * 32)
    a.expect("Registered")
    b = start_node(lab, lab.sites[1].host, "laptop", b"\x0b" * 32)
    reg_b = b.expect("Registered")
    assert [p["names"] for p in reg_b["peers"]] == [["ssh-home"]]
    joined = a.expect("PeerJoined", static=pub(b"\x0b" * 32))
    assert joined["names"] == ["laptop"]
    assert joined["endpoint"].startswith(lab.sites[1].public_ip + ":")
    b.send("list")
    listed = b.expect("ListReceived")
    assert sorted(p["names"][0] for p in listed["peers"]) == ["laptop", "ssh-home"]
    b.send("leave")
    left = a.expect("PeerLeft", static=pub(b"\x0b" * 32))
    assert left["names"] == ["laptop"]


def test_outsider_network_cannot_see_or_reach_members(natlab: LabFactory, tmp_path: Path) -> None:
    lab = natlab(["cone", "cone"])
    start_server(lab, tmp_path / "rdv.db")
    a = start_node(lab, lab.sites[0].host, "ssh-home", b"\x0a" * 32)
    a.expect("Registered")
    x = start_node(lab, lab.sites[1].host, "ssh-home", b"\x0c" * 32, secret=OTHER)
    assert x.expect("Registered")["peers"] == []  # same name, other network: no conflict
    x.send("list")
    assert [p["static"] for p in x.expect("ListReceived")["peers"]] == [pub(b"\x0c" * 32)]
    x.send("connect ssh-home")  # resolves in its own network only: itself, refused
    x.expect("ConnectRefused")
    x.send("relay " + pub(b"\x0a" * 32) + " hello")
    assert [e for e in a.events(wait=1.0) if e["event"] in ("PeerJoined", "Introduced",
                                                             "Relayed")] == []


def test_server_restart_keeps_names_and_registrations(natlab: LabFactory, tmp_path: Path) -> None:
    lab = natlab(["cone", "cone"])
    db = tmp_path / "rdv.db"
    server = start_server(lab, db)
    a = start_node(lab, lab.sites[0].host, "ssh-home", b"\x0a" * 32)
    first = a.expect("Registered")
    server.stop()
    start_server(lab, db)
    # The name comes back from the database: another key is refused, naming A's fingerprint.
    b = start_node(lab, lab.sites[1].host, "ssh-home", b"\x0b" * 32)
    refused = b.expect("RegistrationRefused")
    assert refused["holder"] == fingerprint(public_key(b"\x0a" * 32))
    # A keeps refreshing (every 2 s here) against the restarted server without noticing.
    a.events(wait=3.0)
    c = start_node(lab, lab.sites[1].host, "laptop", b"\x0c" * 32)
    c.expect("Registered")
    c.send("list")
    peers = {p["static"]: p for p in c.expect("ListReceived")["peers"]}
    assert peers[pub(b"\x0a" * 32)]["seen_ago"] <= 3
    assert not any(e["event"] in ("Registered", "ServerUnreachable") for e in a.events())
    assert first["public"] == peers[pub(b"\x0a" * 32)]["endpoint"]


@pytest.mark.parametrize(("kind", "mapping"), [("cone", "endpoint-independent"),
                                               ("symmetric", "endpoint-dependent"),
                                               ("fullcone", "endpoint-independent")])
def test_netcheck_tells_nat_mapping(natlab: LabFactory, tmp_path: Path, kind: str,
                                    mapping: str) -> None:
    lab = natlab([kind])
    start_server(lab, tmp_path / "rdv.db")
    node = start_node(lab, lab.sites[0].host, "", b"\x0d" * 32, register=False)
    node.send("netcheck")
    result = node.expect("Netcheck")
    assert result["udp"] is True
    assert result["mapping"] == mapping
    assert str(result["public_endpoint"]).startswith(lab.sites[0].public_ip + ":")


def test_netcheck_without_server_reports_no_udp(natlab: LabFactory) -> None:
    lab = natlab(["cone"])
    node = start_node(lab, lab.sites[0].host, "", b"\x0d" * 32, register=False)
    node.send("netcheck")
    result = node.expect("Netcheck")
    assert result["udp"] is False and result["mapping"] == "unknown"


def test_relay_forwards_only_between_introduced_members(natlab: LabFactory,
                                                        tmp_path: Path) -> None:
    lab = natlab(["cone", "symmetric", "fullcone"])
    start_server(lab, tmp_path / "rdv.db")
    ka, kb, kc = b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32
    a = start_node(lab, lab.sites[0].host, "ssh-home", ka)
    b = start_node(lab, lab.sites[1].host, "laptop", kb)
    c = start_node(lab, lab.sites[2].host, "other", kc)
    for node in (a, b, c):
        node.expect("Registered")
    b.send(f"relay {pub(ka)} too-early")
    b.send("connect ssh-home")
    intro_b = b.expect("Introduced", name="ssh-home")
    assert intro_b["static"] == pub(ka) and host_of(intro_b) == lab.sites[0].public_ip
    assert intro_b["lan"] == []
    intro_a = a.expect("Introduced", static=pub(kb))
    assert host_of(intro_a) == lab.sites[1].public_ip
    rx0, tx0 = lab.link_bytes(lab.rdv, "eth0")
    for i in range(50):
        b.send(f"relay {pub(ka)} hello-{i:03d}-" + "x" * 900)
    got = [a.expect("Relayed", timeout=5.0) for _ in range(50)]
    assert {g["src"] for g in got} == {pub(kb)}
    assert all(g["data"].startswith("hello-") for g in got)
    rx1, tx1 = lab.link_bytes(lab.rdv, "eth0")
    assert rx1 - rx0 >= 50 * 900 and tx1 - tx0 >= 50 * 900  # it really went via the server
    # C was never introduced to A: nothing arrives; nor did B's relay before the introduction.
    c.send(f"relay {pub(ka)} from-c")
    late = [e for e in a.events(wait=1.0) if e["event"] == "Relayed"]
    assert late == []
    assert not any("too-early" in line for line in a.seen)


def test_no_relay_server_forwards_nothing(natlab: LabFactory, tmp_path: Path) -> None:
    lab = natlab(["cone", "cone"])
    start_server(lab, tmp_path / "rdv.db", "--no-relay")
    ka, kb = b"\x0a" * 32, b"\x0b" * 32
    a = start_node(lab, lab.sites[0].host, "ssh-home", ka)
    b = start_node(lab, lab.sites[1].host, "laptop", kb)
    a.expect("Registered")
    b.expect("Registered")
    b.send("connect ssh-home")
    b.expect("Introduced")
    b.send(f"relay {pub(ka)} hi")
    assert [e for e in a.events(wait=1.0) if e["event"] == "Relayed"] == []


def test_lab_is_cleaned_up(natlab: LabFactory) -> None:
    lab = natlab(["cone"])
    names = list(lab.namespaces)
    lab.close()
    listed = os.popen("ip netns list").read()
    assert not any(name in listed for name in names)


def test_nat_reboot_moves_the_registration(natlab: LabFactory, tmp_path: Path) -> None:
    lab = natlab(["cone", "cone"])
    start_server(lab, tmp_path / "rdv.db")
    ka, kb = b"\x0a" * 32, b"\x0b" * 32
    a = start_node(lab, lab.sites[0].host, "ssh-home", ka)
    b = start_node(lab, lab.sites[1].host, "laptop", kb)
    before = a.expect("Registered")
    b.expect("Registered")
    first, last = lab.reboot_nat(lab.sites[0])  # mappings forgotten, new ones on other ports
    after = a.expect("Registered", timeout=15.0)  # next refresh comes from the new mapping
    port = int(str(after["public"]).rpartition(":")[2])
    assert after["public"] != before["public"] and first <= port <= last
    moved = b.expect("PeerJoined", static=pub(ka), endpoint=after["public"], timeout=5.0)
    assert moved["names"] == ["ssh-home"]


@pytest.mark.parametrize(("required", "outcome"), [("1", "failed"), ("", "skipped")])
def test_lab_unavailable_skips_or_fails(required: str, outcome: str) -> None:
    from lab.netns import require_netns

    try:
        require_netns({"PTUNNEL_REQUIRE_NETNS": required}, probe=lambda: (False, "no netns"))
    except pytest.fail.Exception as exc:
        assert outcome == "failed" and "no netns" in str(exc)
    except pytest.skip.Exception as exc:
        assert outcome == "skipped" and "no netns" in str(exc)
    else:
        raise AssertionError("neither skipped nor failed")


REPLAY = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
s.sendto(bytes.fromhex(sys.argv[1]), (sys.argv[2], int(sys.argv[3])))
try:
    print(s.recv(2048)[:1].hex())
except TimeoutError:
    print("none")
"""


def test_eavesdropper_replaying_a_registration_gets_only_a_cookie(natlab: LabFactory,
                                                                    tmp_path: Path) -> None:
    lab = natlab(["cone", "cone", "cone"])
    start_server(lab, tmp_path / "rdv.db")
    ka, kb = b"\x0a" * 32, b"\x0b" * 32
    a = lab.spawn(lab.sites[0].host, sys.executable, NODE, "--server", SERVER, "--secret",
                  NET.hex(), "--private", ka.hex(), "--names", "ssh-home", "--trace", env=ENV)
    a.expect("Ready")
    a.send("start")
    captured = a.expect("Sent", type=0x22)["hex"]
    registered = a.expect("Registered")
    b = start_node(lab, lab.sites[1].host, "laptop", kb)
    b.expect("Registered")
    # The eavesdropper replays A's registration from its own address (another site).
    host, port = SERVER.split(":")
    out = lab.run(lab.sites[2].host, sys.executable, "-c", REPLAY, captured, host, port)
    assert out.stdout.strip() == "21"  # COOKIE: prove you can receive here; nothing else
    b.send("list")
    peers = {p["static"]: p for p in b.expect("ListReceived")["peers"]}
    assert peers[pub(ka)]["endpoint"] == registered["public"]  # the name did not move
    assert not any(e["event"] in ("PeerJoined", "PeerLeft") for e in b.events(wait=0.5))


def test_public_host_without_nat_registers_its_own_address(natlab: LabFactory,
                                                            tmp_path: Path) -> None:
    lab = natlab(["none"])
    start_server(lab, tmp_path / "rdv.db")
    node = start_node(lab, lab.sites[0].host, "server-box", b"\x0e" * 32)
    assert host_of(node.expect("Registered")) == lab.sites[0].host_ip


def test_silent_node_expires_and_is_announced(natlab: LabFactory, tmp_path: Path) -> None:
    lab = natlab(["cone", "symmetric"])
    # A 6 s registration lifetime (90 s in production) to watch the server's expiry timer.
    start_server(lab, tmp_path / "rdv.db", "--registration-ttl", "6")
    ka, kb = b"\x0a" * 32, b"\x0b" * 32
    a = start_node(lab, lab.sites[0].host, "ssh-home", ka)
    a.expect("Registered")
    b = start_node(lab, lab.sites[1].host, "laptop", kb)
    b.expect("Registered")
    a.expect("PeerJoined", static=pub(kb))
    b.popen.kill()  # no LEAVE: the server must notice the silence
    left = a.expect("PeerLeft", static=pub(kb), timeout=6 + 5 + 3)  # TTL + sweep + slack
    assert left["names"] == ["laptop"]
    a.send("list")
    assert [p["static"] for p in a.expect("ListReceived")["peers"]] == [pub(ka)]


def test_ptunnel_commands_across_nats(natlab: LabFactory, tmp_path: Path) -> None:
    """`ptunnel rendezvous`, `netcheck` and `list` as users run them, each in its namespace."""
    from tunnel.keys.identity import load_or_create_identity, store_network_secret

    lab = natlab(["cone", "symmetric"])
    server = lab.spawn(lab.rdv, sys.executable, "-m", "tunnel", "rendezvous", "--home",
                       str(tmp_path / "rdv"), "--listen", SERVER, env=ENV)
    server.expect_text("rendezvous listening")
    home = tmp_path / "laptop"
    load_or_create_identity(home)
    store_network_secret(home, NET)
    env = {**ENV, "PTUNNEL_HOME": str(home), "PTUNNEL_RENDEZVOUS": SERVER}
    for site, mapping in ((lab.sites[0], "endpoint-independent"),
                          (lab.sites[1], "endpoint-dependent")):
        out = lab.run(site.host, sys.executable, "-m", "tunnel", "netcheck", "--json", env=env)
        result = json.loads(out.stdout)
        assert result["mapping"] == mapping and result["udp"] is True
        assert str(result["public_endpoint"]).startswith(site.public_ip + ":")
    node = start_node(lab, lab.sites[0].host, "ssh-home", b"\x0a" * 32)
    node.expect("Registered")
    out = lab.run(lab.sites[1].host, sys.executable, "-m", "tunnel", "list", "--json", env=env)
    rows = json.loads(out.stdout)
    expected = [(["ssh-home"], fingerprint(public_key(b"\x0a" * 32)))]
    assert [(r["names"], r["fingerprint"]) for r in rows] == expected
    assert rows[0]["endpoint"].startswith(lab.sites[0].public_ip + ":")
