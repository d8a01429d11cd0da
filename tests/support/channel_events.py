"""Every event a channel has queued, in order: what the channel tests compare."""

from __future__ import annotations

from tunnel.channel.channel import Channel
from tunnel.channel.events import ChannelEvent


def events(channel: Channel) -> list[ChannelEvent]:
    found = []
    while (event := channel.next_event()) is not None:
        found.append(event)
    return found
