"""Build hook: compile the sans-IO core with mypyc where a C compiler is present.

Every module of the packages in COMPILED_PACKAGES (not their `__init__.py`: mypyc gives a
compiled package a wrong `__path__` when its shared library sits inside the package), and each
of COMPILED_MODULES, becomes an extension module beside its `.py` source, which still ships:
`PTUNNEL_PURE=1` loads the sources instead (see `tunnel/__init__.py`). The metadata lives in
pyproject.toml; this file only adds the extension modules.

The install never fails because of the compile: no mypyc, a type error mypyc refuses, no C
compiler or a compiler error all leave a pure-Python install and say why on stderr.
`PTUNNEL_PURE_BUILD=1` skips the compile on purpose. An editable install (`pip install -e`,
what `make` does) builds the modules in place, beside the sources.

The optional C data plane (`build_datapath.py`: batched sealing and opening, recvmmsg) is built
beside them; each of its two extensions may fail on its own, leaving its pure-Python twin.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # PEP 517 builds do not add it
from build_datapath import OPTIONAL, OptionalDatapathBuild, datapath_extensions  # noqa: E402

# The per-packet path: AEAD, replay window and session (session/); frames, streams, acks,
# recovery, congestion control and pacing (channel/); and the glue every packet and every local
# read crosses: paths (path/), the node and its peers (node/), the forwarders (forward/).
COMPILED_PACKAGES = (
    "tunnel/session", "tunnel/channel", "tunnel/path", "tunnel/node", "tunnel/forward",
)
# Modules outside those packages that the per-packet path calls: interpreted, each call of
# `is_relay` (every datagram sent and every batch received) was a generic Python call, and so
# was each of the timer heap's (every flush re-arms the node's timer, every seal a session's).
COMPILED_MODULES = ("tunnel/addresses.py", "tunnel/timerheap.py")
# The shared library that holds every compiled module (each module's own extension is a shim).
GROUP_NAME = "tunnel._mypyc"


def _warn(message: str) -> None:
    sys.stderr.write(f"ptunnel build: {message}; installing the pure-Python build\n")


def compiled_sources() -> list[str]:
    """The source files mypyc compiles, relative to the project root (pip builds from there,
    and relative paths keep the generated C independent of where the checkout lives)."""
    return sorted([
        *(path.relative_to(ROOT).as_posix()
          for package in COMPILED_PACKAGES
          for path in (ROOT / package).rglob("*.py")
          if path.name != "__init__.py"),
        *COMPILED_MODULES,
    ])


def mypyc_extensions() -> list[Extension]:
    if os.environ.get("PTUNNEL_PURE_BUILD") == "1":
        _warn("PTUNNEL_PURE_BUILD=1")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc is not installed")
        return []
    try:
        # Type-checked with pyproject.toml's [tool.mypy] settings, as `make typecheck` does.
        extensions: list[Extension] = mypycify(
            compiled_sources(), opt_level="3", group_name=GROUP_NAME
        )
    except SystemExit:  # mypy's way of reporting errors in the sources
        _warn("mypyc rejected the sources (errors above)")
        return []
    return extensions


class OptionalBuildExt(OptionalDatapathBuild):
    """build_ext that falls back to the pure build instead of failing the install.

    All or nothing for mypyc's modules: a shim whose shared library failed to build would make
    its module unimportable, so a failure discards every compiled module already built. The
    data plane's extensions are optional one by one (`OptionalDatapathBuild`).
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # noqa: BLE001 -- any compiler failure means "pure build"
            _warn(f"compiling the extension modules failed ({error})")
            self.inplace = False
            for ext in self.extensions:
                if ext.name not in OPTIONAL:
                    Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            self.extensions = []


def main() -> None:
    options: dict[str, Any] = {"cmdclass": {"build_ext": OptionalBuildExt}}
    extensions = mypyc_extensions() + datapath_extensions()
    if extensions:
        options["ext_modules"] = extensions
    setup(**options)


main()
