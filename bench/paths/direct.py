"""Direct TCP to the sink: the ceiling every tunnel is compared with."""

from __future__ import annotations

from bench.paths.base import ChildrenMixin, Target


class Direct(ChildrenMixin):
    name = "direct"
    description = "plain TCP on 127.0.0.1, no tunnel"

    def start(self, target: Target) -> int:
        return target.port
