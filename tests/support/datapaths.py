"""Both implementations of the data plane, for tests that must hold for each.

`datapath_module("c")` and `udpio_module("c")` are the C extensions; without them the test is
skipped, except in CI (`CI=true`, set by .ci/run), where a missing extension is a failure: CI
must test the C path.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

IMPLEMENTATIONS = ("c", "python")
_DATAPATH = {"c": "tunnel.session._datapath", "python": "tunnel.session.datapath_pure"}
_UDPIO = {"c": "tunnel.node._udpio", "python": "tunnel.node.udpio_pure"}


def datapath_module(name: str) -> ModuleType:
    """Sealing, opening and the replay window (`tunnel.session.datapath`'s two sides)."""
    return _load(_DATAPATH[name])


def udpio_module(name: str) -> ModuleType:
    """Batched reads (`tunnel.node.udpio`'s two sides)."""
    return _load(_UDPIO[name])


def _load(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} is not built ({error}); CI must test it: install "
                        "gcc and libssl-dev, then reinstall (make)")
        pytest.skip(f"{module} is not built here ({error})")


@pytest.fixture(params=IMPLEMENTATIONS)
def datapath(request: pytest.FixtureRequest) -> ModuleType:
    """The data plane module under test, once per implementation."""
    return datapath_module(request.param)
