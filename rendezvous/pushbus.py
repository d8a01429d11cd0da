"""Push routing between the servers of one deployment: Redis pub/sub (shell, asyncio).

A node's NAT admits rendezvous traffic only from the server it registered at, so a push to it
(INTRODUCED, JOINED, LEFT, a relayed packet) that another server produced must leave from its
own server. The registry marks such a `Send` with `via` = that server's id; `PushBus.publish`
puts it on the channel `<prefix>push:<server id>`, and every server listens on its own channel
(`run`) and sends what arrives from its main socket to the address in the message. The payload
is already sealed to the recipient (or is a relay envelope), so the bus neither reads nor could
alter it undetected; Redis is the deployment's own, as trusted as the store in it.

Message layout (one pub/sub message):

| field       | size     | content                                   |
|-------------|----------|-------------------------------------------|
| host length | 1        | n                                          |
| host        | n        | the recipient's IP, ASCII (`10.0.1.2`)    |
| port        | 2        | big-endian                                |
| data        | the rest | the datagram to send, as the registry made |

Delivery is best effort, like UDP: a publish while Redis is away is dropped and counted (the
registry has already answered the requester; the target's next refresh or a repeated CONNECT
repairs it). Publishes queue (at most `QUEUE_LIMIT`) and leave in one pipeline per loop turn.
The subscriber reconnects after `RECONNECT_AFTER` when its connection drops (Redis restarted).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from redis import asyncio as aioredis
from redis import exceptions as rexc

from rendezvous.protocol import Endpoint

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000  # pushes waiting for Redis; beyond it they are dropped (a burst of LEFTs)
RECONNECT_AFTER = 1.0  # seconds between subscribe attempts while Redis is away
# A local or LAN Redis answers a publish in a millisecond; one that takes a second is away.
PUBLISH_TIMEOUT = 1.0  # seconds
_PORT = struct.Struct("!H")


def channel(prefix: str, server_id: str) -> str:
    return f"{prefix}push:{server_id}"


def encode_push(addr: Endpoint, data: bytes) -> bytes:
    host = addr[0].encode("ascii")
    return bytes([len(host)]) + host + _PORT.pack(addr[1]) + data


def decode_push(message: bytes) -> tuple[Endpoint, bytes] | None:
    """(address, datagram), or None for a message that is not one (dropped by the caller)."""
    if not message:
        return None
    n = message[0]
    if len(message) < 1 + n + _PORT.size + 1:
        return None
    try:
        host = message[1:1 + n].decode("ascii")
    except UnicodeDecodeError:
        return None
    (port,) = _PORT.unpack_from(message, 1 + n)
    if not host or port == 0:
        return None
    return (host, port), message[1 + n + _PORT.size:]


class PushBus:
    """Publishes pushes for other servers and delivers those published for this one."""

    def __init__(self, url: str, server_id: str, prefix: str,
                 deliver: Callable[[bytes, Endpoint], None]) -> None:
        self.server_id = server_id
        self.stats: Counter[str] = Counter()
        self._prefix = prefix
        self._deliver = deliver
        # Two connections: publishes time out (a Redis that stops answering must not pile up
        # flushes), while the subscriber waits on its channel for as long as it is quiet.
        self._redis = aioredis.Redis.from_url(url, socket_connect_timeout=PUBLISH_TIMEOUT,
                                              socket_timeout=PUBLISH_TIMEOUT)
        self._listener = aioredis.Redis.from_url(url, socket_connect_timeout=PUBLISH_TIMEOUT)
        self._queue: list[tuple[str, bytes]] = []
        self._flush: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def publish(self, server_id: str, addr: Endpoint, data: bytes) -> None:
        """Queue `data` for `server_id` to send to `addr`; sent on the next loop turn."""
        if len(self._queue) >= QUEUE_LIMIT:
            self.stats["push_dropped"] += 1
            return
        self._queue.append((channel(self._prefix, server_id), encode_push(addr, data)))
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self._start_flush)

    def _start_flush(self) -> None:
        self._flush = None
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[str, bytes]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for name, message in batch:
            pipe.publish(name, message)
        try:
            await pipe.execute()
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
            self.stats["push_dropped"] += len(batch)
            log.warning("could not hand %d push(es) to other servers: %s", len(batch), exc)
            return
        self.stats["push_published"] += len(batch)

    async def run(self, subscribed: Callable[[], None] | None = None) -> None:
        """Deliver what other servers publish for this one; until cancelled. `subscribed` is
        called each time the subscription is (re)established."""
        name = channel(self._prefix, self.server_id)
        while True:
            pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(name)
                log.info("receiving pushes for server %s on %s", self.server_id, name)
                if subscribed is not None:
                    subscribed()
                async for message in pubsub.listen():
                    self._on_message(message)
            except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
                log.warning("push channel %s lost (%s); resubscribing in %.0f s", name, exc,
                            RECONNECT_AFTER)
            finally:
                # redis-py annotates `aclose` only from 8.x on; called through Any it type-checks
                # against either, where an ignore would be unused with one of them
                await cast(Any, pubsub).aclose()
            await asyncio.sleep(RECONNECT_AFTER)

    def _on_message(self, message: dict[str, object]) -> None:
        data = message.get("data")
        decoded = decode_push(data) if isinstance(data, bytes) else None
        if decoded is None:
            self.stats["push_malformed"] += 1
            return
        addr, datagram = decoded
        self.stats["push_delivered"] += 1
        self._deliver(datagram, addr)

    async def close(self) -> None:
        for task in list(self._tasks):
            await task
        await self._redis.aclose()
        await self._listener.aclose()
