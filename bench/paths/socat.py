"""`socat` as a plain TCP relay (default 8 KiB buffer, as users run it; nodelay both sides)."""

from __future__ import annotations

from bench.paths.base import READY_TIMEOUT_S, ChildrenMixin, Target, free_port, need_tool
from bench.procs import Child


class Socat(ChildrenMixin):
    name = "socat"
    description = "socat TCP relay, one forked process per connection"

    def start(self, target: Target) -> int:
        socat = need_tool("socat")
        port = free_port()
        child = self.spawn("relay", Child("socat", [
            socat, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay,backlog=2048",
            f"TCP:{target.host}:{target.port},nodelay",
        ]))
        child.wait_listening(port, READY_TIMEOUT_S)
        return port
