"""Which networks a rendezvous serves: the operator's admission policy (pure).

Without a list the server is open: any network may register, introduce and relay, within the
rate limits. With `--networks FILE` only the listed networks may; a request from any other gets
REFUSED `NETWORK_REFUSED` (after its cookie and signature are checked, so the refusal goes only
to a proven address and costs the store nothing), and the relay forwards nothing for it.

The file holds one network id a line, as `ptunnel id` prints it (16 hex digits) or in full
(64 hex digits, the network's Ed25519 public key); `#` starts a comment, blank lines are
ignored. A short id matches the networks whose full id starts with it: making a network whose
id starts with a listed short id takes about 2^64 key derivations.
"""

from __future__ import annotations

from dataclasses import dataclass

FULL_ID_HEX = 64  # hex digits of a network id (32 bytes)
SHORT_ID_HEX = 16  # hex digits `ptunnel id` shows (`tunnel.keys.netkeys.short_network_id`)


@dataclass(frozen=True, slots=True)
class Admission:
    """`networks` None: open to every network. Otherwise full ids and short-id prefixes."""

    networks: frozenset[bytes] | None = None
    prefixes: frozenset[bytes] = frozenset()

    @property
    def open(self) -> bool:
        return self.networks is None

    def admits(self, network: bytes) -> bool:
        if self.networks is None:
            return True
        return network in self.networks or network[: SHORT_ID_HEX // 2] in self.prefixes

    def describe(self) -> str:
        """For the server's start line: "open" or "3 networks"."""
        if self.networks is None:
            return "open"
        count = len(self.networks) + len(self.prefixes)
        return f"{count} network{'' if count == 1 else 's'}"


OPEN = Admission()


def parse_networks(text: str, source: str) -> Admission:
    """The policy of a networks file. Raises ValueError "SOURCE:LINE: what is wrong"."""
    full: set[bytes] = set()
    prefixes: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), 1):
        word = line.split("#", 1)[0].strip().lower()
        if not word:
            continue
        if len(word) not in (SHORT_ID_HEX, FULL_ID_HEX) or not _is_hex(word):
            raise ValueError(
                f"{source}:{number}: {word[:70]!r} is not a network id; expected "
                f"{SHORT_ID_HEX} or {FULL_ID_HEX} hex digits, as `ptunnel id` shows them")
        (full if len(word) == FULL_ID_HEX else prefixes).add(bytes.fromhex(word))
    return Admission(frozenset(full), frozenset(prefixes))


def _is_hex(word: str) -> bool:
    return all(c in "0123456789abcdef" for c in word)
