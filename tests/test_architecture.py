"""The shape of the code, checked on its source: pure cores, no import cycles, layers, no dev code.

Every module of `tunnel/` and `rendezvous/` is parsed with `ast`, and every import counts: at the
top, inside functions, and under `if TYPE_CHECKING:` (a type-only back-reference still ties two
modules together, so it counts as a cycle and as a layer violation too). The rules:

| test                                   | rule                                                |
|----------------------------------------|-----------------------------------------------------|
| `test_pure_modules_do_no_io`           | PURE modules never import FORBIDDEN, not even       |
|                                        | through another module: time and randomness come in |
|                                        | as `now` and an injected `rng`                      |
| `test_importing_pure_modules_...`      | importing them all loads neither asyncio nor socket |
|                                        | (a subprocess; catches third-party dependencies)    |
| `test_no_import_cycles`                | the module import graph has no cycle                |
| `test_imports_follow_the_layers`       | a module imports its own unit and lower LAYERS only |
| `test_shipped_code_imports_no_dev_...` | no `tests`, `lab` or `bench`; no `sys.path` tricks  |

Each failure names the importing module, the line and what it imports.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("tunnel", "rendezvous")  # the packages pyproject.toml ships
DEV_PACKAGES = frozenset({"tests", "lab", "bench"})
FORBIDDEN = frozenset(
    {"asyncio", "socket", "time", "random", "selectors", "threading", "subprocess"}
)

# Sans-IO code: a package name covers all of its modules, so a new file is pure by default.
PURE = (
    "tunnel.errors",
    "tunnel.addresses",
    "tunnel.timerheap",
    "tunnel.session",
    "tunnel.channel",
    "tunnel.path",
    "tunnel.keys.netkeys",
    "tunnel.keys.joincode",
    "tunnel.node.peer",
    "tunnel.node.payloads",
    "tunnel.node.pathlog",
    "rendezvous.protocol",
    "rendezvous.registry",
    "rendezvous.relay",
    "rendezvous.cookies",
    "rendezvous.ratelimit",
    "rendezvous.admission",
    "rendezvous.redislua",
)

# Layer ranks, bottom up. A module belongs to the longest unit here that is it or contains it;
# it may import its own unit and units of a lower rank, never a higher one, and never another
# unit of the same rank unless SIBLING_IMPORTS allows that pair.
LAYERS = {
    "tunnel": 0,  # only the package's __init__ (the version); see EXACT_UNITS
    "tunnel.errors": 0,
    "tunnel.addresses": 0,
    "tunnel.timerheap": 0,
    "tunnel.keys": 1,
    "tunnel.session": 1,
    "tunnel.channel": 1,
    # The rendezvous wire format: the contract between the node (the client in `tunnel.path`,
    # the node, netcheck) and the server, so it sits below both.
    "rendezvous.protocol": 1,
    "tunnel.path": 2,
    "tunnel.node": 3,
    "tunnel.forward": 4,
    "tunnel.api": 5,
    # The rendezvous server is an application beside the public API: it imports the protocol
    # and the link's sealing (`tunnel.path.sealing`), and only the CLI (`ptunnel rendezvous`)
    # may import it, never the node.
    "rendezvous": 5,
    "tunnel.cli": 6,
    "tunnel.__main__": 7,
}
SIBLING_IMPORTS: frozenset[tuple[str, str]] = frozenset()  # (importing unit, imported unit)
# Units that cover only the module of that name, not the modules below it: a new package under
# `tunnel/` must be given a layer of its own rather than fall into layer 0.
EXACT_UNITS = frozenset({"tunnel"})


@dataclass(frozen=True, slots=True)
class Import:
    importer: str
    target: str  # the module imported (for `from m import name`, m.name if that is a module)
    line: int
    type_checking: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        where = " under TYPE_CHECKING" if self.type_checking else ""
        return f"{self.importer} (line {self.line}) imports {self.target}{where}"


def discover() -> dict[str, Path]:
    """Every module of the shipped packages, by dotted name."""
    modules: dict[str, Path] = {}
    for package in SHIPPED:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES = discover()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    """The imports of one module, and where it touches `sys.path`."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.imports: list[Import] = []
        self.sys_path: list[int] = []  # lines
        self._type_checking = 0

    def _add(self, target: str, line: int) -> None:
        imp = Import(self.module, target, line, self._type_checking > 0)
        if imp not in self.imports:  # `from m import a, b` is one import of m
            self.imports.append(imp)

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_checking += 1
        for statement in node.body:
            self.visit(statement)
        self._type_checking -= 1
        for statement in node.orelse:
            self.visit(statement)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.rsplit(".", node.level - 1)[0] if node.level > 1 else self.package
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        if base == "sys" and any(alias.name == "path" for alias in node.names):
            self.sys_path.append(node.lineno)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in MODULES else base, node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        # importlib.import_module("name") and __import__("name") with a literal name
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
        if (
            name in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            self._add(node.args[0].value, node.lineno)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr == "path" and isinstance(node.value, ast.Name) and node.value.id == "sys":
            self.sys_path.append(node.lineno)
        self.generic_visit(node)


def _collect(module: str) -> _Collector:
    path = MODULES[module]
    collector = _Collector(module, path.name == "__init__.py")
    collector.visit(ast.parse(path.read_text(), str(path)))
    return collector


COLLECTED = {module: _collect(module) for module in MODULES}


def imports_of(module: str) -> list[Import]:
    return COLLECTED[module].imports


def project_imports(module: str) -> Iterator[Import]:
    """Imports of other modules of `tunnel/` and `rendezvous/` (the graph's edges)."""
    return (i for i in imports_of(module) if i.target in MODULES and i.target != module)


def within(module: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def pure_modules() -> list[str]:
    return sorted(m for m in MODULES if within(m, PURE))


def unit_of(module: str) -> str | None:
    """The longest LAYERS name that is the module or a package containing it."""
    units = [u for u in LAYERS if module == u or (u not in EXACT_UNITS and within(module, [u]))]
    return max(units, key=len) if units else None


# --- declarations ---------------------------------------------------------------------------


def test_declarations_name_existing_modules() -> None:
    stale = [name for name in (*PURE, *LAYERS) if not any(within(m, [name]) for m in MODULES)]
    assert stale == [], f"PURE or LAYERS name modules that do not exist: {stale}"
    assert "tunnel.session.device" in pure_modules()
    assert "tunnel.node.node" not in pure_modules()


def test_every_module_has_a_layer() -> None:
    unassigned = sorted(m for m in MODULES if unit_of(m) is None)
    assert unassigned == [], f"add these modules (or their package) to LAYERS: {unassigned}"


# --- purity ---------------------------------------------------------------------------------


def io_offences(start: str) -> list[str]:
    """How `start` reaches FORBIDDEN modules: directly, or through runtime imports (those under
    TYPE_CHECKING never run) of modules not declared pure, shortest chain first. The search stops
    at other pure modules: they are reported on their own."""
    offences: list[str] = []
    chains: dict[str, list[Import]] = {start: []}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        forbidden = [
            i for i in imports_of(module) if i.target.split(".")[0] in FORBIDDEN
        ]
        if forbidden:
            names = ", ".join(f"{i.target} (line {i.line})" for i in forbidden)
            via = "".join(f"{step}, and " for step in chains[module])
            offences.append(f"{start}: {via}{module} imports {names}")
        for imp in project_imports(module):
            target = imp.target
            if not imp.type_checking and target not in chains and not within(target, PURE):
                chains[target] = [*chains[module], imp]
                queue.append(target)
    return offences


def test_pure_modules_do_no_io() -> None:
    offences = [offence for module in pure_modules() for offence in io_offences(module)]
    if offences:
        pytest.fail("sans-IO modules import I/O, time or randomness:\n  " + "\n  ".join(offences))


def test_importing_pure_modules_loads_no_event_loop_or_sockets() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {pure_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "    loaded = [m for m in ('asyncio', 'socket') if m in sys.modules]\n"
        "    if loaded:\n"
        "        print(name, 'loads', ' and '.join(loaded))\n"
        "        break\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env
    )
    if out.stdout.strip():
        pytest.fail(f"importing {out.stdout.strip()}")


# --- cycles ---------------------------------------------------------------------------------


def strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module, or with a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(graph[successor])))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        components.append(sorted(component))
    return sorted(components)


def test_no_import_cycles() -> None:
    graph = {m: sorted({i.target for i in project_imports(m)}) for m in MODULES}
    reports = []
    for component in strongly_connected(graph):
        members = set(component)
        edges = [
            f"\n    {i}" for m in component for i in project_imports(m) if i.target in members
        ]
        reports.append(" <-> ".join(component) + ":" + "".join(edges))
    if reports:
        pytest.fail("import cycles:\n  " + "\n  ".join(reports))


# --- layers ---------------------------------------------------------------------------------


def layer_violations() -> list[str]:
    violations = []
    for module in sorted(MODULES):
        own = unit_of(module)
        for imp in project_imports(module):
            other = unit_of(imp.target)
            if own is None or other is None:
                continue  # test_every_module_has_a_layer reports it
            if other == own or (own, other) in SIBLING_IMPORTS:
                continue
            if LAYERS[other] > LAYERS[own]:
                violations.append(
                    f"{imp}: {own} (layer {LAYERS[own]}) must not import "
                    f"{other} (layer {LAYERS[other]}), a higher layer"
                )
            elif LAYERS[other] == LAYERS[own]:
                violations.append(
                    f"{imp}: {own} and {other} are siblings (layer {LAYERS[own]}); "
                    "allow the pair in SIBLING_IMPORTS if it is needed"
                )
    return violations


def test_imports_follow_the_layers() -> None:
    violations = layer_violations()
    if violations:
        pytest.fail("layer violations:\n  " + "\n  ".join(violations))


# --- shipped code -----------------------------------------------------------------------------


def test_shipped_code_imports_no_dev_code() -> None:
    offences = [
        str(i)
        for m in sorted(MODULES)
        for i in imports_of(m)
        if i.target.split(".")[0] in DEV_PACKAGES
    ]
    offences += [
        f"{m} (line {line}) uses sys.path"
        for m in sorted(MODULES)
        for line in COLLECTED[m].sys_path
    ]
    if offences:
        pytest.fail("shipped modules reach into dev code:\n  " + "\n  ".join(offences))
