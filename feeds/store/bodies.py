"""Activity bodies: one JSON string per activity, shared by every feed that holds its id."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.conf import settings

from .connection import client, is_cluster, scatter
from .keys import body_key


def set_bodies(bodies: Mapping[int, bytes], *, best_effort: bool = False) -> None:
    """Cache bodies. ``best_effort`` (a read caching what it loaded from PostgreSQL): on a
    cluster, one scatter round with the read deadline, and a node that does not answer in time
    simply misses the write."""
    if not bodies:
        return
    ttl = settings.FEEDSITE_BODY_TTL_SECONDS
    if best_effort and is_cluster():
        scatter(
            [(body_key(a), ("SET", body_key(a), b, "EX", ttl)) for a, b in bodies.items()],
            settings.FEEDSITE_READ_DEADLINE_MS / 1000,
        )
        return
    pipe = client().pipeline(transaction=False)
    for aid, body in bodies.items():
        pipe.set(body_key(aid), body, ex=ttl)
    pipe.execute()


def get_bodies(activity_ids: Sequence[int]) -> dict[int, bytes]:
    """Bodies found in the cache; one pipelined round trip (GETs, not a cross-slot MGET). On a
    cluster one scatter round with the read deadline: a body on a node that does not answer in
    time is not found (the caller reads it from PostgreSQL)."""
    if not activity_ids:
        return {}
    if is_cluster():
        keys = [body_key(a) for a in activity_ids]
        found, _ = scatter(
            [(k, ("GET", k)) for k in keys], settings.FEEDSITE_READ_DEADLINE_MS / 1000
        )
        return {
            a: raw for a, raw in zip(activity_ids, found, strict=True) if isinstance(raw, bytes)
        }
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
