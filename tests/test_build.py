"""Which build runs: the mypyc-compiled core by default, the pure-Python sources on request.

`setup.py` compiles every module of `tunnel/session/` and `tunnel/channel/` (not the packages'
`__init__`) beside its source; `tunnel/__init__.py` loads the sources instead under
`PTUNNEL_PURE=1` or when a compiled module is older than its source. Each check imports every
`tunnel` module in a fresh interpreter, whose environment decides the build, and reads which
loader each came from. An install without a C compiler is pure by design: set
`PTUNNEL_PURE_BUILD=1` for it (as for `pip install`) and the compiled-build checks skip.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tunnel

ROOT = Path(__file__).resolve().parents[1]
COMPILED_PACKAGES = (
    "tunnel.session", "tunnel.channel", "tunnel.path", "tunnel.node", "tunnel.forward",
)
COMPILED_MODULES = ("tunnel.addresses", "tunnel.timerheap")  # setup.py's, outside those packages
# The optional C data plane (build_datapath.py): extensions of their own, not mypyc's, chosen by
# `tunnel.session.datapath` and `tunnel.node.udpio` (tested in tests/session/test_datapath.py).
DATA_PLANE = ("tunnel.session._datapath", "tunnel.node._udpio")

# Imports every tunnel module and prints {module: True if it is an extension module}.
PROBE = """
import importlib, json, pkgutil, sys
from importlib.machinery import ExtensionFileLoader
import tunnel
for info in pkgutil.walk_packages(tunnel.__path__, "tunnel."):
    # __main__ runs the CLI; tunnel._mypyc__mypyc is mypyc's library behind the compiled modules;
    # the C data plane is imported by its selectors, as they choose (not directly here)
    if not info.name.endswith(("__main__", "__mypyc", "._datapath", "._udpio")):
        importlib.import_module(info.name)
print(json.dumps({
    name: isinstance(module.__spec__.loader, ExtensionFileLoader)
    for name, module in sys.modules.items()
    if name == "tunnel" or name.startswith("tunnel.")
}))
"""


def _env(pure: bool, pythonpath: Path = ROOT) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != tunnel.PURE_ENV}
    env["PYTHONPATH"] = str(pythonpath)
    if pure:
        env[tunnel.PURE_ENV] = "1"
    return env


def _run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def _loaded(pure: bool) -> dict[str, bool]:
    loaded: dict[str, bool] = json.loads(_run(["-c", PROBE], _env(pure)))
    return loaded


def _expects_compiled_core(name: str) -> bool:
    # a package's __init__ stays a source
    in_package = name.startswith(tuple(f"{p}." for p in COMPILED_PACKAGES))
    return (in_package or name in COMPILED_MODULES) and name not in (
        "tunnel.channel.congestion", *DATA_PLANE
    )


needs_compiled_build = pytest.mark.skipif(
    os.environ.get("PTUNNEL_PURE_BUILD") == "1", reason="installed as the pure build on purpose"
)


def test_pure_build_loads_no_extension_module() -> None:
    loaded = _loaded(pure=True)
    assert "tunnel.channel.channel" in loaded and "tunnel.session.session" in loaded
    assert [name for name, extension in loaded.items() if extension] == []


@needs_compiled_build
def test_default_build_loads_the_core_compiled_and_nothing_else() -> None:
    loaded = _loaded(pure=False)
    core = sorted(name for name in loaded if _expects_compiled_core(name))
    assert len(core) >= 20  # every module of session/ and channel/
    assert [name for name in core if not loaded[name]] == [], "core modules loaded from source"
    shared = "tunnel._mypyc__mypyc"  # mypyc's library behind the compiled modules
    assert loaded.get(shared) is True
    assert [name for name, ext in loaded.items()
            if ext and name not in (*core, shared, *DATA_PLANE)] == []


@needs_compiled_build
def test_version_names_the_build() -> None:
    compiled = _run(["-m", "tunnel", "--version"], _env(pure=False)).strip()
    pattern = (rf"ptunnel {re.escape(tunnel.__version__)} "
               r"\(compiled: mypyc, (\d+) modules(; C data plane)?\)")
    match = re.fullmatch(pattern, compiled)
    assert match is not None, compiled
    assert int(match[1]) == sum(map(_expects_compiled_core, _loaded(pure=False)))
    pure = _run(["-m", "tunnel", "--version"], _env(pure=True)).strip()
    assert pure == f"ptunnel {tunnel.__version__} (pure Python: PTUNNEL_PURE=1)"


@needs_compiled_build
def test_a_source_edited_after_the_build_runs_the_pure_build(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "tunnel", tmp_path / "tunnel")
    edited = tmp_path / "tunnel" / "session" / "replay.py"
    later = time.time() + 60  # after the build (copytree kept the extensions' times)
    os.utime(edited, (later, later))
    done = subprocess.run(
        [sys.executable, "-m", "tunnel", "--version"],
        env=_env(pure=False, pythonpath=tmp_path), cwd=tmp_path,  # -m puts the cwd first
        capture_output=True, text=True, timeout=60, check=True,
    )
    expected = (f"ptunnel {tunnel.__version__} "
                "(pure Python: compiled modules older than their sources")
    assert done.stdout.strip() in (f"{expected})", f"{expected}; C data plane)")
    assert "tunnel.session.replay" in done.stderr and "rebuild" in done.stderr


# Module constants that a test or lab helper reassigns (tests/node/test_netcheck_retry.py,
# tests/support/rdv_node.py): a Final one would be inlined where it is used, and not change.
REASSIGNED_CONSTANTS = {"NETCHECK_RETRY_FIRST", "REFRESH_INTERVAL"}


def _compiled_sources() -> list[Path]:
    packages = [ROOT / p.replace(".", "/") for p in COMPILED_PACKAGES]
    modules = [ROOT / f"{m.replace('.', '/')}.py" for m in COMPILED_MODULES]
    return [*(f for p in packages for f in p.rglob("*.py") if f.name != "__init__.py"), *modules]


def test_compiled_modules_declare_their_constants_final() -> None:
    """mypyc reads a module constant that is not `Final` from the module's dict at every use
    (a string-keyed lookup: channel states and frame types cost 2-3 % of a packet's CPU)."""
    missing = []
    for source in _compiled_sources():
        for node in ast.parse(source.read_text()).body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                continue
            target = node.targets[0]
            names = target.elts if isinstance(target, ast.Tuple) else [target]
            for name in names:
                if (isinstance(name, ast.Name) and re.fullmatch(r"_?[A-Z][A-Z0-9_]*", name.id)
                        and name.id not in REASSIGNED_CONSTANTS
                        and not _is_type_variable(node.value)):
                    missing.append(f"{source.relative_to(ROOT)}:{node.lineno} {name.id}")
    assert len(_compiled_sources()) > 50
    assert missing == [], "annotate these module constants `Final`"


def _is_type_variable(value: ast.expr) -> bool:
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id == "TypeVar")
