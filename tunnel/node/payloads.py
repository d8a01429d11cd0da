"""What travels inside a session's encrypted payloads, above the channel (sans-IO codecs).

Every transport payload starts with one byte saying what it carries:

| byte | payload          | layout after the byte                                             |
|------|------------------|-------------------------------------------------------------------|
| 0x00 | channel packet   | the reliable channel's packet (`tunnel.channel.channel`)          |
| 0x01 | path ping        | tx id (8 B)                                                       |
| 0x02 | path pong        | tx id (8 B)                                                       |
| 0x03 | prediction req.  | (empty) "my NAT randomizes ports; I opened sockets to you: ping   |
|      |                  | random ports of my address" (`tunnel.path.prediction`)            |

Path pings test a candidate path (see `tunnel.path.manager`); they are encrypted and authenticated
like everything else, so an outsider cannot fake a working path.

The headers of forwarded TCP streams and UDP datagrams, which travel inside channel packets,
are the forwarding layer's own: see `tunnel.forward.wire`.
"""

from __future__ import annotations

from typing import Final

PAYLOAD_CHANNEL: Final = 0x00
PAYLOAD_PING: Final = 0x01
PAYLOAD_PONG: Final = 0x02
PAYLOAD_PREDICTION: Final = 0x03
TXID_SIZE: Final = 8


def encode_ping(kind: int, txid: bytes) -> bytes:
    return bytes((kind,)) + txid

