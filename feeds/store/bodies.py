"""Activity bodies: one JSON string per activity, shared by every feed that holds its id."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.conf import settings

from .connection import client
from .keys import body_key


def set_bodies(bodies: Mapping[int, bytes]) -> None:
    if not bodies:
        return
    ttl = settings.FEEDSITE_BODY_TTL_SECONDS
    pipe = client().pipeline(transaction=False)
    for aid, body in bodies.items():
        pipe.set(body_key(aid), body, ex=ttl)
    pipe.execute()


def get_bodies(activity_ids: Sequence[int]) -> dict[int, bytes]:
    """Bodies found in the cache; one pipelined round trip (GETs, not a cross-slot MGET)."""
    if not activity_ids:
        return {}
    pipe = client().pipeline(transaction=False)
    for aid in activity_ids:
        pipe.get(body_key(aid))
    return {aid: raw for aid, raw in zip(activity_ids, pipe.execute(), strict=True) if raw}


def delete_body(activity_id: int) -> None:
    client().delete(body_key(activity_id))


async def body_get_async(r, activity_id: int) -> bytes | None:
    """One body on the async client ``r`` (the stream gateway)."""
    raw: bytes | None = await r.get(body_key(activity_id))
    return raw
