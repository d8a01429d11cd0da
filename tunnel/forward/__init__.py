"""Local TCP and UDP ports forwarded over a peer's channel: the forwarding half of the shell.

A forwarded TCP connection is one channel stream; forwarded UDP datagrams are channel datagrams.
Both start with a header naming the service, because one node may expose several.

| module         | purpose                                                                      |
|----------------|------------------------------------------------------------------------------|
| `wire`         | sans-IO codecs: the stream open header, the UDP datagram framing with its    |
|                | flow id, the `RESET_*` codes                                                 |
| `sockets`      | `SocketBudget`: how many sockets forwarding may hold under the process's     |
|                | descriptor limit; new streams and flows past it are refused                  |
| `bridge`       | `StreamBridge`: one local TCP connection <-> one channel stream, with        |
|                | backpressure, half-close and abort both ways (used by both sides)            |
| `udp_flows`    | `UdpListener` (connecting side: a local UDP port, one flow per source) and   |
|                | `UdpFlowSocket` (exposing side: one socket to the service per peer and flow) |
| `exposing`     | `ExposedService` and `ExposingSide`: reads the open header of streams peers  |
|                | open, checks the allow list, dials the service or refuses with a reset code  |
| `forwarder`    | `Forwarder`: routes every channel event of every peer to the bridge,         |
|                | listener or exposing side it is for; owns the tasks and the idle UDP sweep   |

Each module imports only those above it in the table, never in a circle: the bridge and the UDP
sockets reach the forwarder only through the small `BridgeOwner` / `FlowOwner` protocols.
Only `wire` is sans-IO (the core purity test checks it); the rest is asyncio shell. This package
file imports nothing, so that importing `wire` stays free of asyncio.
"""
