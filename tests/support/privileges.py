"""Probes for `lab.netns.require_netns` of tests that need root and a util-linux tool: such a
test skips where either is missing, and fails instead under PTUNNEL_REQUIRE_NETNS=1 (CI)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable


def root_with(tool: str, why_root: str) -> Callable[[], tuple[bool, str]]:
    """A probe: (True, "") as root with `tool` on PATH, else (False, what is missing)."""

    def probe() -> tuple[bool, str]:
        if os.geteuid() != 0:
            return False, why_root
        if shutil.which(tool) is None:
            return False, f"{tool} (util-linux) is not installed"
        return True, ""

    return probe
