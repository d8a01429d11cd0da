"""The protocol core is sans-IO: no asyncio, socket, time or random in it.

Two checks: the core's own source never imports those modules (time and randomness are passed in
as `now` and an injected `rng`), and importing the whole core does not load asyncio or socket
through some dependency either.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import rendezvous
import tunnel

# Modules that are allowed to do I/O: the thin asyncio shell, the CLI and file-backed state.
SHELL_MODULES = {
    "tunnel.cli.main",
    "tunnel.cli.context",
    "lab.demo",
    "tunnel.__main__",
    "tunnel.keys.identity",
    "tunnel.cli.config",
    "tunnel.cli.logs",
    "tunnel.node.udp",
    "tunnel.node.node",
    "tunnel.forward.bridge",
    "tunnel.forward.exposing",
    "tunnel.forward.forwarder",
    "tunnel.forward.udp_flows",
    "tunnel.cli.control",
    "tunnel.api",
    "tunnel.cli.runtime",
    "tunnel.node.prediction",
    "tunnel.keys.pins",
    "tunnel.node.netcheck",
    "rendezvous.server",
    "rendezvous.store",
    "rendezvous.cli",
}
SHELL_PACKAGES = ("tunnel.cli.commands",)
FORBIDDEN = {"asyncio", "socket", "time", "random", "selectors", "threading", "subprocess"}


def core_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in (tunnel, rendezvous):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name in SHELL_MODULES or info.name.startswith(SHELL_PACKAGES):
                continue
            spec = info.module_finder.find_spec(info.name, None)
            assert spec is not None and spec.origin is not None
            found[info.name] = Path(spec.origin)
    return found


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_modules_exist() -> None:
    assert "tunnel.keys.netkeys" in core_modules()


def test_core_source_imports_no_io_modules() -> None:
    offenders = {
        name: sorted(imported_names(path) & FORBIDDEN)
        for name, path in core_modules().items()
        if imported_names(path) & FORBIDDEN
    }
    assert offenders == {}


def test_importing_core_loads_no_event_loop_or_sockets() -> None:
    code = (
        "import sys, importlib\n"
        f"for name in {sorted(core_modules())!r}: importlib.import_module(name)\n"
        "print(','.join(m for m in ('asyncio', 'socket') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core modules load {out.stdout.strip()}"
