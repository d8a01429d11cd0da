"""Which transport ciphers a machine offers, from its /proc/cpuinfo."""

from __future__ import annotations

from pathlib import Path

from tunnel.node.ciphers import has_aes_instructions, local_ciphers
from tunnel.session.params import AES_256_GCM, CHACHA20_POLY1305

X86 = "processor\t: 0\nflags\t\t: fpu sse2 ssse3 pclmulqdq sse4_1 aes avx avx2\n"
X86_NO_AES = "processor\t: 0\nflags\t\t: fpu sse2 ssse3 sse4_1 avx\n"
ARM64 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


def test_aes_instructions_are_read_from_x86_and_arm64_cpuinfo() -> None:
    assert has_aes_instructions(X86) and has_aes_instructions(ARM64)
    assert not has_aes_instructions(X86_NO_AES)
    assert not has_aes_instructions("")


def test_aes_gcm_is_offered_first_only_with_aes_instructions(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(X86)
    assert local_ciphers(cpuinfo) == (AES_256_GCM, CHACHA20_POLY1305)
    cpuinfo.write_text(X86_NO_AES)
    assert local_ciphers(cpuinfo) == (CHACHA20_POLY1305,)
    assert local_ciphers(tmp_path / "missing") == (CHACHA20_POLY1305,)
