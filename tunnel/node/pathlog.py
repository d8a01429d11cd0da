"""The words of the node's log about peers and paths (sans-IO): who a peer is, what a path
change was and why, and what was tried, for a person reading `-v` output.

Addresses read as people write them (`10.0.1.2:43540`, `[::1]:7000`), never as Python reprs;
a peer is its name when it has one, with its key's fingerprint (`web (SHA256:…)`). Each function
returns the text of one line.
"""

from __future__ import annotations

from collections.abc import Iterable

from tunnel.addresses import Addr, format_endpoint, is_relay
from tunnel.keys.netkeys import fingerprint
from tunnel.path.manager import CandidateReport, Path


def peer_label(name: str | None, static: bytes) -> str:
    """`web (SHA256:…)`, or the fingerprint alone for a peer without a name (one that connects
    to us is known by its key only)."""
    return f"{name} ({fingerprint(static)})" if name else fingerprint(static)


def address_words(addr: Addr) -> str:
    """A real address as `10.0.1.2:43540`; the relay's pseudo address as `the relay`."""
    return "the relay" if is_relay(addr) else format_endpoint(addr)


def path_words(path: Path | None) -> str:
    """`direct lan 10.0.1.2:43540`, `relay via rendezvous` or `no path`."""
    if path is None:
        return "no path"
    if not path.direct or path.addr is None:
        return "relay via rendezvous"
    return f"direct {path.kind.name.lower()} {format_endpoint(path.addr)}"


def tried(reports: Iterable[CandidateReport]) -> str:
    """Every candidate and how it went: `10.0.1.2:43540 lan 12 probes no answer, …`."""
    words = [f"{format_endpoint(r.addr)} {r.kind} {r.probes_sent} probe"
             f"{'' if r.probes_sent == 1 else 's'} {'answers' if r.working else 'no answer'}"
             for r in reports]
    return ", ".join(words) or "no candidates"


def path_change(old: Path | None, new: Path | None,
                reports: Iterable[CandidateReport]) -> str:
    """`relay via rendezvous -> direct public 198.51.100.7:40112: a direct path answered`."""
    return f"{path_words(old)} -> {path_words(new)}: {_reason(old, new, reports)}"


def _reason(old: Path | None, new: Path | None, reports: Iterable[CandidateReport]) -> str:
    if new is None:
        return f"no path answers any more (tried {tried(reports)})"
    if not new.direct:
        if old is None:
            return f"no direct path answered yet (tried {tried(reports)})"
        return f"the direct path went silent (tried {tried(reports)})"
    if old is None:
        return "the first candidate to answer"
    if not old.direct:
        return "a direct path answered; leaving the relay"
    if new.kind < old.kind:
        return f"a {new.kind.name.lower()} path is preferred to a {old.kind.name.lower()} one"
    if new.kind == old.kind and new.rtt is not None and old.rtt is not None \
            and new.rtt < old.rtt:
        return f"a lower round trip ({new.rtt * 1e3:.1f} ms, was {old.rtt * 1e3:.1f} ms)"
    return "the peer's packets now come from there (it moved, or the old path went silent)"
