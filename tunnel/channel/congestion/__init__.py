"""Congestion controllers behind one interface (`recovery.CongestionController`), picked by name:
BBR (model-based, the default) and the loss-based NewReno and CUBIC."""

from __future__ import annotations

from collections.abc import Callable

from tunnel.channel.congestion.bbr import Bbr
from tunnel.channel.congestion.lossbased import Cubic, NewReno
from tunnel.channel.recovery import CongestionController

CONTROLLERS = ("bbr", "cubic", "newreno")


def create_controller(
    name: str, max_datagram_size: int, rng: Callable[[int], bytes] | None = None
) -> CongestionController:
    """`name` is one of CONTROLLERS (the config's `congestion:` setting); `rng` randomises
    BBR's probing phase."""
    if name == "newreno":
        return NewReno(max_datagram_size)
    if name == "cubic":
        return Cubic(max_datagram_size)
    if name == "bbr":
        return Bbr(max_datagram_size, rng)
    raise ValueError(f"unknown congestion controller {name!r}; choose one of {CONTROLLERS}")
