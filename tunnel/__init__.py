"""ptunnel node: reach a machine behind a NAT through a punched, encrypted UDP path.

Build selection. Where a C compiler was present at install time, `setup.py` compiled the sans-IO
core (`tunnel/session/`, `tunnel/channel/`, `tunnel/path/`) and the node and forwarders around
it (`tunnel/node/`, `tunnel/forward/`, `tunnel/addresses.py`) with mypyc into extension modules
beside their `.py` sources. Python's import system prefers an extension module to a source file
of the same name, so that compiled build runs by default. A finder placed ahead of the standard
ones loads every `tunnel` module from its `.py` source instead (the pure-Python build) when

- `PTUNNEL_PURE=1` asks for it, or
- a compiled module is older than its source: an in-place build (`pip install -e`) that was not
  redone after an edit would run the old code, which is worse than running slowly.

It is all or nothing: a compiled module calls the other compiled modules directly, so mixing the
builds would give two copies of the same classes. `BUILD` says which build runs, and whether the
optional C data plane (`build_datapath.py`) is in use (`ptunnel --version` shows it).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence
from importlib.machinery import (
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    FileFinder,
    ModuleSpec,
    SourceFileLoader,
)
from pathlib import Path
from types import ModuleType

__version__ = "0.1.0"

PURE_ENV = "PTUNNEL_PURE"
# setup.py's GROUP_NAME plus mypyc's suffix: the shared library, not a module of ours.
_SHARED_LIBRARY = "_mypyc__mypyc"
# An install writes a module's extension and source within moments of each other, in either
# order; only a source edited after the build is newer by more than this.
_STALE_AFTER = 2.0  # seconds

_log = logging.getLogger(__name__)


class SourceOnlyFinder:
    """Finds `tunnel.*` modules as `.py` sources only, never as extension modules.

    A meta path finder by protocol (importlib.abc would add 30 ms to every start of the CLI)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if not fullname.startswith(f"{__name__}.") or path is None:
            return None
        for entry in path:
            spec = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(fullname)
            if spec is not None and spec.loader is not None:
                return spec
        return None


def _extensions(package_dir: Path) -> dict[str, Path]:
    """Every extension module installed in the package: dotted name -> extension file."""
    found: dict[str, Path] = {}
    for extension in package_dir.rglob("*.*"):
        # EXTENSION_SUFFIXES runs from the most specific (.cpython-311-...so) to plain .so
        suffix = next((s for s in EXTENSION_SUFFIXES if extension.name.endswith(s)), None)
        if suffix is None:
            continue
        name = extension.name.removesuffix(suffix)
        if name != _SHARED_LIBRARY:
            parts = extension.relative_to(package_dir).parent.parts
            found[".".join((__name__, *parts, name))] = extension
    return found


def _compiled_modules(extensions: dict[str, Path]) -> dict[str, Path]:
    """The modules mypyc compiled: extensions beside a `.py` source of the same name (the C data
    plane's extensions have none: their twins are other modules, chosen by `datapath`/`udpio`)."""
    return {name: path for name, path in extensions.items()
            if path.with_name(name.rpartition(".")[2] + ".py").exists()}


def _stale(compiled: dict[str, Path]) -> list[str]:
    """Compiled modules whose source was changed after they were built."""
    stale = []
    for name, extension in compiled.items():
        source = extension.with_name(name.rpartition(".")[2] + ".py")
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime + _STALE_AFTER:
            stale.append(name)
    return sorted(stale)


def _select_build() -> tuple[str, tuple[str, ...]]:
    """Install the source-only finder if the pure build must run; return (BUILD, compiled)."""
    extensions = _extensions(Path(__file__).resolve().parent)
    compiled = _compiled_modules(extensions)
    pure = os.environ.get(PURE_ENV) == "1"
    # What `tunnel.session.datapath` will pick: the C data plane when built and not refused.
    c_data_plane = not pure and f"{__name__}.session._datapath" in extensions
    data_plane = "; C data plane" if c_data_plane else ""
    if not compiled:
        return "pure Python" + data_plane, ()
    reason = ""
    if pure:
        reason = f"{PURE_ENV}=1"
    elif stale := _stale(compiled):
        reason = "compiled modules older than their sources"
        _log.warning(
            "%d compiled modules (%s, ...) are older than their sources; running the pure-Python "
            "build: rebuild with `make` or `pip install -e .`", len(stale), stale[0],
        )
    if reason:
        sys.meta_path.insert(0, SourceOnlyFinder())
        return f"pure Python: {reason}{data_plane}", ()
    return f"compiled: mypyc, {len(compiled)} modules{data_plane}", tuple(sorted(compiled))


# Which build runs, for `ptunnel --version`, and the modules it loads compiled (none when pure).
BUILD, COMPILED_MODULES = _select_build()


def data_plane(c_module: str, pure_module: str) -> tuple[str, ModuleType]:
    """One piece of the optional C data plane: `("c", c_module)` where that extension was built
    and the pure build is not asked for, else `("python", pure_module)`, its twin. By name, with
    importlib: mypyc compiles a selector module, and would keep only the branch of an
    `if TYPE_CHECKING` / `try: from ... import` that mypy sees."""
    if os.environ.get(PURE_ENV) != "1":
        try:
            return "c", importlib.import_module(c_module)
        except ImportError:  # not built here (no compiler or no libcrypto headers at install)
            pass
    return "python", importlib.import_module(pure_module)
