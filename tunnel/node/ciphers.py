"""The transport ciphers this machine offers in its handshakes: AES-256-GCM only with AES
instructions, ChaCha20-Poly1305 always.

With AES-NI and carry-less multiply (x86 `aes` and `pclmulqdq`; arm64 `aes` and `pmull`),
AES-256-GCM through `cryptography` costs 0.55 us to seal or open a 1,440-byte payload here,
ChaCha20-Poly1305 1.8 us (`bench/bench_crypto.py`); without them OpenSSL falls back to a
constant-time software AES that is slower than ChaCha20-Poly1305, so such a machine offers
ChaCha20-Poly1305 alone and a peer never makes it pay for AES. Read from `/proc/cpuinfo`
(Linux); elsewhere, or if it cannot be read, ChaCha20-Poly1305 alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from tunnel.session.params import AES_256_GCM, CHACHA20_POLY1305

CPUINFO: Final = Path("/proc/cpuinfo")
_AES_FLAGS: Final = ({"aes", "pclmulqdq"}, {"aes", "pmull"})  # x86 "flags", arm64 "Features"


def has_aes_instructions(cpuinfo: str) -> bool:
    """Whether the first processor of a `/proc/cpuinfo` text has AES and GCM's multiply."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            return any(needed <= flags for needed in _AES_FLAGS)
    return False


def local_ciphers(cpuinfo: Path = CPUINFO) -> tuple[int, ...]:
    """The ciphers to offer, preferred first."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return (CHACHA20_POLY1305,)
    if has_aes_instructions(text):
        return (AES_256_GCM, CHACHA20_POLY1305)
    return (CHACHA20_POLY1305,)
