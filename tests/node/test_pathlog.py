"""The log's words for path changes: each change says from where to where and why, with the
candidates tried when no direct path works; addresses as people write them."""

from __future__ import annotations

from tunnel.keys.netkeys import fingerprint
from tunnel.node.pathlog import address_words, path_change, peer_label, tried
from tunnel.path.manager import CandidateReport, Kind, Path

KEY = bytes(range(32))
LAN = Path(Kind.LAN, ("10.0.1.2", 43540), 0.0004)
PUBLIC = Path(Kind.PUBLIC, ("198.51.100.7", 40112), 0.030)
FASTER = Path(Kind.PUBLIC, ("198.51.100.7", 40999), 0.010)
V6 = Path(Kind.PUBLIC, ("2001:db8::7", 40112), 0.030)
RELAY = Path(Kind.RELAY, None, None)
REPORTS = [CandidateReport(("10.0.1.2", 43540), "lan", 12, False, None),
           CandidateReport(("198.51.100.7", 40112), "public", 1, False, None)]
TRIED = "10.0.1.2:43540 lan 12 probes no answer, 198.51.100.7:40112 public 1 probe no answer"


def test_each_change_says_why() -> None:
    assert path_change(None, LAN, []) == (
        "no path -> direct lan 10.0.1.2:43540: the first candidate to answer")
    assert path_change(None, RELAY, REPORTS) == (
        f"no path -> relay via rendezvous: no direct path answered yet (tried {TRIED})")
    assert path_change(RELAY, PUBLIC, REPORTS) == (
        "relay via rendezvous -> direct public 198.51.100.7:40112: a direct path answered; "
        "leaving the relay")
    assert path_change(PUBLIC, RELAY, REPORTS) == (
        "direct public 198.51.100.7:40112 -> relay via rendezvous: the direct path went silent "
        f"(tried {TRIED})")
    assert path_change(PUBLIC, LAN, []).endswith(": a lan path is preferred to a public one")
    assert path_change(PUBLIC, FASTER, []).endswith(
        ": a lower round trip (10.0 ms, was 30.0 ms)")
    assert path_change(FASTER, PUBLIC, []).endswith(": the peer's packets now come from there "
                                                    "(it moved, or the old path went silent)")
    assert path_change(LAN, None, REPORTS) == (
        f"direct lan 10.0.1.2:43540 -> no path: no path answers any more (tried {TRIED})")


def test_addresses_and_peers_read_as_people_write_them() -> None:
    assert path_change(None, V6, []).startswith("no path -> direct public [2001:db8::7]:40112")
    assert address_words(("relay:" + KEY.hex(), 0)) == "the relay"
    assert address_words(("::1", 7000)) == "[::1]:7000"
    assert peer_label("web", KEY) == f"web ({fingerprint(KEY)})"
    assert peer_label(None, KEY) == fingerprint(KEY)
    assert tried([]) == "no candidates"
