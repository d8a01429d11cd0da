"""Both implementations of the data plane, for tests that must hold for each.

`datapath_module("c")` is the C extension; without it the test is skipped, except in CI
(`CI=true`, set by .ci/run), where a missing extension is a failure: CI must test the C path.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

IMPLEMENTATIONS = ("c", "python")
_MODULES = {"c": "tunnel.session._datapath", "python": "tunnel.session.datapath_pure"}


def datapath_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the C data plane is not built ({error}); CI must test it: install "
                        "gcc and libssl-dev, then reinstall (make)")
        pytest.skip(f"the C data plane is not built here ({error})")


@pytest.fixture(params=IMPLEMENTATIONS)
def datapath(request: pytest.FixtureRequest) -> ModuleType:
    """The data plane module under test, once per implementation."""
    return datapath_module(request.param)
