"""The stream gateway's pub/sub on Redis Cluster, on whichever node is alive.

Redis Cluster delivers a PUBLISH made on any node to subscribers on every node (over the
cluster bus, replicas included), so the gateway listens on one plain connection to one node
(redis-py's async cluster client has no pub/sub). That node may die: killed, or failed over and
gone. ``NodePubSub`` then moves to the first other node that answers (the node it was on first,
if it is back, then the startup nodes of REDIS_URL, then every node the cluster named at the
last connect), subscribes there again to every channel it holds, and calls ``on_connect``, as
a reconnect on the same node does: whatever was published in between never reached it, and
the gateway (feeds.stream) subscribes again, PINGs and replays what those channels may have
carried since shortly before the loss.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
from django.conf import settings
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .connection import cluster_nodes

# A node that does not answer CLUSTER NODES within this long is passed over (one that is gone
# refuses at once; one that hangs accepts the connection and says nothing).
ANSWER_SECONDS = 1.0
LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
OnConnect = Callable[[Any], Awaitable[None]]


def node_addresses(nodes_reply: bytes | str, asked: tuple[str, int]) -> list[tuple[str, int]]:
    """The addresses of the nodes a CLUSTER NODES reply names that are not failing, in its
    order (``asked``: the node that answered, whose own line may lack its IP). Pure."""
    text = nodes_reply.decode() if isinstance(nodes_reply, bytes) else nodes_reply
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        flags = set(parts[2].split(","))
        if flags & {"fail", "fail?", "noaddr", "handshake"}:
            continue
        host, _, port = parts[1].split("@")[0].rpartition(":")
        if not port.isdigit():
            continue
        found.append((host or asked[0], int(port)))
    return found


class NodePubSub:
    """A pub/sub connection to one node of the cluster at a time, moved to another node that
    answers when its node is lost (the methods the gateway's LiveSubscription uses)."""

    def __init__(self, on_connect: OnConnect) -> None:
        self._on_connect = on_connect
        self._channels: dict[str, None] = {}  # in subscription order
        self._client: redis.asyncio.Redis | None = None
        self._pubsub: Any = None
        self._lock = asyncio.Lock()
        self._startup = [(n.host, n.port) for n in cluster_nodes(settings.REDIS_URL)]
        self._known: list[tuple[str, int]] = []
        self.node: tuple[str, int] | None = None  # the node listened on
        self.moves = 0  # connections made to a node after the first

    def _candidates(self) -> list[tuple[str, int]]:
        first = [self.node] if self.node is not None else []
        return list(dict.fromkeys([*first, *self._startup, *self._known]))

    async def _move(self, lost: Any) -> None:
        """Listen on the first node that answers, subscribed to every channel held. Nothing
        when another task has moved already (the pub/sub that failed is no longer ours)."""
        async with self._lock:
            if self._pubsub is not lost:
                return
            await self._drop()
            password = urlsplit(settings.REDIS_URL).password
            for host, port in self._candidates():
                r = redis.asyncio.Redis(
                    host=host,
                    port=port,
                    password=password,
                    socket_connect_timeout=0.5,
                    # A dropped connection to a live node: connect again and read on, once; a
                    # node that is gone refuses the reconnect, which raises (then we move).
                    retry=Retry(NoBackoff(), 1),
                )
                try:
                    nodes = await asyncio.wait_for(
                        r.execute_command("CLUSTER", "NODES"), ANSWER_SECONDS
                    )
                    pubsub = r.pubsub()
                    await pubsub.subscribe(*self._channels)
                except (TimeoutError, *LOST, redis.exceptions.RedisError):
                    await r.aclose()
                    continue
                moved = self.node is not None
                self._known = node_addresses(nodes, (host, port))
                self._client, self._pubsub, self.node = r, pubsub, (host, port)
                connection = pubsub.connection
                assert connection is not None  # (subscribe connected it)
                connection.register_connect_callback(self._on_connect)
                if moved:
                    self.moves += 1
                    await self._on_connect(connection)
                return
            raise redis.exceptions.ConnectionError(
                f"no node of the cluster answers for pub/sub (tried {self._candidates()})"
            )

    async def _drop(self) -> None:
        pubsub, r, self._pubsub, self._client = self._pubsub, self._client, None, None
        with contextlib.suppress(Exception):  # a connection that is gone may fail to close
            if pubsub is not None:
                await pubsub.aclose()
            if r is not None:
                await r.aclose()

    async def _on_current(self, call: Callable[[Any], Awaitable[Any]]) -> Any:
        """``call(pubsub)`` on the current connection (made first if there is none); when the
        node is lost, on the next node that answers (which holds every channel already)."""
        if self._pubsub is None:
            await self._move(None)
        pubsub = self._pubsub
        try:
            return await call(pubsub)
        except LOST:
            await self._move(pubsub)
            return None

    async def subscribe(self, *channels: str) -> None:
        """Subscribe (again: a no-op for a channel held) on the current node; a move
        subscribes the next node to every channel held."""
        self._channels.update(dict.fromkeys(channels))
        await self._on_current(lambda p: p.subscribe(*channels))

    async def unsubscribe(self, *channels: str) -> None:
        for channel in channels:
            self._channels.pop(channel, None)
        if self._pubsub is not None and channels:
            await self._on_current(lambda p: p.unsubscribe(*channels))

    async def ping(self, message: str) -> None:
        """A PING on the subscription (its pong comes back as a message); after a move, on
        the new node."""
        pubsub = self._pubsub
        await self._on_current(lambda p: p.ping(message))
        if self._pubsub is not pubsub:
            await self._pubsub.ping(message)

    async def get_message(self, *, ignore_subscribe_messages: bool, timeout: float) -> Any:
        """The next message, or None after ``timeout`` seconds (or after a move: whatever the
        lost node held is gone, and on_connect has told the gateway)."""
        return await self._on_current(
            lambda p: p.get_message(
                ignore_subscribe_messages=ignore_subscribe_messages, timeout=timeout
            )
        )

    @property
    def channels(self) -> Iterable[str]:
        return list(self._channels)

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()
