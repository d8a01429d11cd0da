"""Build hook of the C data plane, imported by setup.py: two small optional extensions,

- `tunnel/session/_datapath.c`: batched ChaCha20-Poly1305 seal/open and the replay window, on
  OpenSSL's libcrypto (sans-IO; twin `tunnel/session/datapath_pure.py`);
- `tunnel/node/_udpio.c`: recvmmsg (the shell's I/O; twin `tunnel/node/udpio_pure.py`).

Both are optional: no C compiler, no Python headers or no libcrypto headers (Debian: `gcc`,
`python3-dev`, `libssl-dev`) leave the pure-Python twins in use and say why on stderr; the
install still succeeds. `PTUNNEL_PURE_BUILD=1` skips them on purpose.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension
from setuptools.command.build_ext import build_ext

DATAPATH = Extension(
    "tunnel.session._datapath",
    sources=["tunnel/session/_datapath.c"],
    libraries=["crypto"],  # OpenSSL's libcrypto: ChaCha20-Poly1305 through EVP
    extra_compile_args=["-O2", "-std=c11"],
    optional=True,  # setuptools reports a failure and goes on
)
UDPIO = Extension(
    "tunnel.node._udpio",
    sources=["tunnel/node/_udpio.c"],
    extra_compile_args=["-O2", "-std=c11"],
    optional=True,
)
OPTIONAL = frozenset({DATAPATH.name, UDPIO.name})


def datapath_extensions() -> list[Extension]:
    """The extensions to build, or none when the pure build was asked for."""
    if os.environ.get("PTUNNEL_PURE_BUILD") == "1":
        return []
    return [DATAPATH, UDPIO]


class OptionalDatapathBuild(build_ext):
    """build_ext that turns a failure of a data-plane extension into a warning.

    setuptools' `optional=True` already catches compiler errors; this also catches what it does
    not (a missing compiler raises before any extension is tried).
    """

    def build_extension(self, ext: Extension) -> None:
        if ext.name not in OPTIONAL:
            super().build_extension(ext)
            return
        try:
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001 -- any build failure means "the Python twin"
            sys.stderr.write(
                f"ptunnel build: {ext.name} was not built ({error}); its pure-Python "
                "twin runs instead (Debian: apt-get install gcc libssl-dev, then reinstall)\n"
            )


def build_in_place() -> int:
    """Build the extension beside its source without installing (`python build_datapath.py`):
    for a checkout used through PYTHONPATH; `pip install` builds it by itself."""
    from setuptools import Distribution

    distribution = Distribution({"ext_modules": datapath_extensions(), "script_name": __file__})
    command = OptionalDatapathBuild(distribution)
    command.inplace = True
    command.ensure_finalized()
    command.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(build_in_place())
