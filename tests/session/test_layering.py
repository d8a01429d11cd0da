"""The session package imports in one direction: no module imports another that imports it back.

Imports under `TYPE_CHECKING` count too: a cycle there is still a cycle for whoever reads the code
(the session used to reach back into the device that way).
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import tunnel.session

PACKAGE = "tunnel.session"


def session_imports() -> dict[str, set[str]]:
    """Module name -> the modules of this package it imports (anywhere in its source)."""
    directory = Path(tunnel.session.__file__).parent
    modules = {path.stem for path in directory.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in directory.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                if node.module == PACKAGE:  # from tunnel.session import crypto, handshake
                    found.update(alias.name for alias in node.names if alias.name in modules)
                elif node.module.startswith(PACKAGE + "."):
                    found.add(node.module.removeprefix(PACKAGE + "."))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(PACKAGE + "."):
                        found.add(alias.name.removeprefix(PACKAGE + "."))
        graph[path.stem] = found
    return graph


def test_session_does_not_import_device() -> None:
    graph = session_imports()
    assert "device" not in graph["session"]
    assert "device" in graph  # the check above looked at the real package


def test_no_import_cycles_in_the_session_package() -> None:
    try:
        order = list(TopologicalSorter(session_imports()).static_order())
    except CycleError as error:  # pragma: no cover - the failure message is the point
        raise AssertionError(f"import cycle: {error.args[1]}") from error
    assert order.index("session") < order.index("device")
