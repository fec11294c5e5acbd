"""Live streams: the pub/sub channel of each author and the registry of open SSE streams."""

from __future__ import annotations

from collections.abc import Iterable

from .connection import client
from .keys import live_channel, streams_key


def announce(author_id: int, activity_id: int) -> None:
    """Tell open streams of the author's followers (and the author) that an activity landed."""
    client().publish(live_channel(author_id), str(activity_id))


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


class LiveSubscription:
    """One stream's pub/sub subscription to the channels of a set of authors (on the async
    client ``r``): the stream asks for the next activity id, the store speaks to Redis."""

    def __init__(self, r) -> None:
        self._pubsub = r.pubsub()

    async def follow(self, author_ids: Iterable[int]) -> None:
        channels = [live_channel(a) for a in author_ids]
        if channels:
            await self._pubsub.subscribe(*channels)

    async def unfollow(self, author_ids: Iterable[int]) -> None:
        channels = [live_channel(a) for a in author_ids]
        if channels:
            await self._pubsub.unsubscribe(*channels)

    async def next_id(self, timeout: float) -> int | None:
        """The next announced activity id, or None after ``timeout`` seconds of silence."""
        msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        return None if msg is None else int(msg["data"])

    async def close(self) -> None:
        await self._pubsub.aclose()
