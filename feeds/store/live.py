"""Live streams: the pub/sub channel of each author, the registry of open SSE streams and the
ledger of what they sent (stream catch-up, feeds.replay)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .connection import client, is_cluster
from .followees import followees_key
from .keys import (
    follows_channel,
    hidden_key,
    live_channel,
    stream_ledger_key,
    streams_key,
    token_key,
)
from .pubsub_nodes import NodePubSub

# GETs per pipeline in token_entries: 1,000 keys of ~300 bytes each is one ~300 KB reply,
# parsed without holding the event loop for long.
TOKEN_ENTRIES_BATCH = 1_000


def announce(author_id: int, activity_id: int) -> None:
    """Tell open streams of the author's followers (and the author) that an activity landed."""
    client().publish(live_channel(author_id), str(activity_id))


def announce_update(author_id: int, activity_id: int) -> None:
    """Tell open streams of the author's followers (and the author) that an activity's body
    changed (an edit): the gateway sends them ``event: update``."""
    client().publish(live_channel(author_id), f"u{activity_id}")


async def stream_register(r, user_id: int, stream_id: str, now: float, stale_after: float) -> int:
    """Register (or refresh) an open stream; returns how many of the user's streams are live."""
    key = streams_key(user_id)
    pipe = r.pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", now - stale_after)
    pipe.zadd(key, {stream_id: now})
    pipe.expire(key, int(stale_after) + 60)
    pipe.zcard(key)
    return int((await pipe.execute())[-1])


async def stream_unregister(r, user_id: int, stream_id: str) -> None:
    await r.zrem(streams_key(user_id), stream_id)


async def ledger_note(
    r, writes: Sequence[tuple[int, Mapping[str, int], int | None]], trim_mark: str, ttl: int
) -> None:
    """Several streams' ledger writes in one pipelined round trip (per node on a cluster; each
    command on one key), each (user id, members {member: score}, trim below): the members
    written and, when a threshold is given, what scores below it dropped, the highest threshold
    recorded as the score of ``trim_mark``, the ledger kept ``ttl`` seconds more (async client
    ``r``). Without one, the one ZADD: a delivery to thousands of streams is as many commands."""
    pipe = r.pipeline(transaction=False)
    for user_id, members, trim_below in writes:
        key = stream_ledger_key(user_id)
        pipe.zadd(key, dict(members))
        if trim_below is not None:
            pipe.zremrangebyscore(key, "-inf", f"({trim_below}")
            pipe.zadd(key, {trim_mark: trim_below}, gt=True)
            pipe.expire(key, ttl)
    await pipe.execute()


async def ledger_read(r, user_id: int, min_score: int) -> tuple[list[tuple[str, int]], set[str]]:
    """The user's stream ledger from ``min_score`` up, as (member, score), and the ids of the
    user's streams registered open: one pipelined round trip (two keys, one command each)."""
    pipe = r.pipeline(transaction=False)
    pipe.zrangebyscore(stream_ledger_key(user_id), min_score, "+inf", withscores=True)
    pipe.zrange(streams_key(user_id), 0, -1)
    entries, open_ids = await pipe.execute()
    return (
        [(m.decode(), int(score)) for m, score in entries],
        {m.decode() for m in open_ids},
    )


async def token_entries(r, digests: Sequence[str]) -> list[bytes | None]:
    """The token cache entries (or tombstones, or None) of these token digests, for the open
    streams' periodic re-check: one pipelined round trip of single-key GETs per 1,000 tokens
    (Redis Cluster splits a pipeline per node)."""
    entries: list[bytes | None] = []
    for start in range(0, len(digests), TOKEN_ENTRIES_BATCH):
        pipe = r.pipeline(transaction=False)
        for digest in digests[start : start + TOKEN_ENTRIES_BATCH]:
            pipe.get(token_key(digest))
        entries.extend(await pipe.execute())
    return entries


async def connect_reads(
    r, digest: str | None, user_id: int
) -> tuple[bytes | None, dict[bytes, bytes], bytes | None]:
    """A stream connect's one round trip (async client ``r``): the token's cache entry (None
    without ``digest``), the user's cached followee list (HGETALL) and hidden-author list, each
    a single-key read (a cluster splits them by node). Nothing is written: the list's lifetime
    runs from its fill or last change, so a change lost to a Redis outage ends with it."""
    pipe = r.pipeline(transaction=False)
    if digest is not None:
        pipe.get(token_key(digest))
    pipe.hgetall(followees_key(user_id))
    pipe.get(hidden_key(user_id))
    replies = await pipe.execute()
    token = replies.pop(0) if digest is not None else None
    followees, hidden = replies
    return token, followees, hidden


class LiveSubscription:
    """The pub/sub connection of a process's stream gateway (on the async client ``r``):
    author channels (new activities) and users' follow channels (follows made while a stream
    is open). The gateway asks for the next message; the store speaks to Redis."""

    def __init__(self, r) -> None:
        # On a cluster, pub/sub runs on a plain connection to one node, moved to another node
        # when that one is lost (pubsub_nodes); it calls _reconnected after a move.
        self._pubsub: Any = NodePubSub(self._reconnected) if is_cluster() else r.pubsub()
        self._live = live_channel("")
        self._follows = follows_channel("")
        # How many times the connection was made again (redis-py reconnects by itself and
        # resubscribes; whatever was published in between is lost, so the gateway replays it).
        self.reconnects = 0

    async def open(self) -> None:
        # A channel of its own from the start: reading a pub/sub connection with no
        # subscription is an error, and the gateway reads before its first stream subscribes.
        await self._pubsub.subscribe(live_channel("gateway"))
        if not is_cluster():  # (NodePubSub registers it on every connection it makes)
            self._pubsub.connection.register_connect_callback(self._reconnected)

    async def _reconnected(self, connection: object) -> None:
        self.reconnects += 1

    async def resubscribe(self, author_ids: Iterable[int | str], user_ids: Iterable[int]) -> None:
        """Subscribe again to every channel the gateway needs (a no-op for those it holds): a
        reconnect whose own resubscription failed half-way is left subscribed to them all."""
        await self._sub(
            True,
            [
                live_channel("gateway"),
                *(live_channel(a) for a in author_ids),
                *(follows_channel(u) for u in user_ids),
            ],
        )

    async def probe(self, token: int) -> None:
        """A PING on the subscription: its ("pong", 0, token) comes back after every command
        sent before it has run (subscriptions included)."""
        await self._pubsub.ping(str(token))

    async def follow(self, author_ids: Iterable[int | str]) -> None:
        await self._sub(True, [live_channel(a) for a in author_ids])

    async def unfollow(self, author_ids: Iterable[int | str]) -> None:
        await self._sub(False, [live_channel(a) for a in author_ids])

    async def watch_follows(self, user_ids: Iterable[int]) -> None:
        await self._sub(True, [follows_channel(u) for u in user_ids])

    async def unwatch_follows(self, user_ids: Iterable[int]) -> None:
        await self._sub(False, [follows_channel(u) for u in user_ids])

    async def _sub(self, on: bool, channels: list[str]) -> None:
        if channels:
            await (self._pubsub.subscribe if on else self._pubsub.unsubscribe)(*channels)

    async def next_message(self, timeout: float) -> tuple[str, Any, Any] | None:
        """("activity", source, activity id), ("update", source, activity id) (a source: an
        author's id, or a followed object's name, "o" + its digest), ("follows", user id,
        (True to follow or False to unfollow, source)), ("hidden", user id, 0: the user's
        hidden authors changed), ("notification", user id, activity id), ("pong", 0, token),
        or None after ``timeout`` seconds of silence."""
        msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        if msg is not None and msg["type"] == "pong" and msg["data"].isdigit():
            return "pong", 0, int(msg["data"])
        if msg is None or msg["type"] != "message":
            return None
        channel = msg["channel"].decode()
        if channel.startswith(self._follows):
            user_id, data = int(channel[len(self._follows) :]), msg["data"]
            if data.startswith(b"n"):
                return "notification", user_id, int(data[1:])
            if data == b"h":
                return "hidden", user_id, 0
            source = data[1:].decode()
            return (
                "follows",
                user_id,
                (data[:1] == b"+", source if source[:1] == "o" else int(source)),
            )
        tail = channel[len(self._live) :]
        if not channel.startswith(self._live) or not (tail.isdigit() or tail[:1] == "o"):
            return None
        source = tail if tail[:1] == "o" else int(tail)
        data = msg["data"]
        if data.startswith(b"u"):
            return "update", source, int(data[1:])
        return "activity", source, int(data)

    async def close(self) -> None:
        await self._pubsub.aclose()


def announce_follow(follower_id: int, followee_id: int | str, following: bool) -> None:
    """Tell the follower's open streams to start (or stop) listening to the followee (a user's
    id, or a followed object's name: feeds.store.followees.object_source)."""
    client().publish(follows_channel(follower_id), f"{'+' if following else '-'}{followee_id}")


def announce_hidden(user_id: int) -> None:
    """Tell the user's open streams that their hidden authors (blocks, mutes) changed."""
    client().publish(follows_channel(user_id), "h")


def announce_objects(sources: Sequence[str], activity_id: int, *, update: bool = False) -> None:
    """Tell open streams hearing these objects (their names) that an activity about them
        landed (or, ``update``, was edited). Not pipelined: a cluster pipeline has no key to route a
    PUBLISH by."""
    data = f"u{activity_id}" if update else str(activity_id)
    for source in dict.fromkeys(sources):  # an object and a target at most: one PUBLISH each
        client().publish(live_channel(source), data)


def announce_notification(user_id: int, activity_id: int) -> None:
    """Tell the user's open streams that a notification arrived (on their follows channel,
    which every stream of theirs already hears)."""
    client().publish(follows_channel(user_id), f"n{activity_id}")
