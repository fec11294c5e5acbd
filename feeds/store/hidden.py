"""Authors a reader does not see (muted, blocked either way): a cached id list per reader, read
in the feed read's first round trip (no extra round trip on a warm read) and rewritten from
PostgreSQL after every block or mute change."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings

from .connection import best_effort, client, is_cluster, replicate, round_trip, scatter
from .keys import hidden_key


def hidden_from_cache(raw: bytes | None) -> frozenset[int] | None:
    """The cached ids (None: not cached). Pure."""
    if raw is None:
        return None
    return frozenset(int(i) for i in raw.decode().split(",") if i)


def set_hidden(
    user_id: int, ids: Iterable[int], ttl: int, *, only_if_missing: bool = False
) -> None:
    """Cache the list. A reader filling a miss passes ``only_if_missing``: a change that
    committed meanwhile wrote a fresher list, which it must not overwrite."""
    key, value = hidden_key(user_id), ",".join(map(str, ids))
    if only_if_missing:  # a read filling a miss: best effort on a cluster
        best_effort((key, ("SET", key, value, "EX", ttl, "NX")))
    else:
        client().set(key, value, ex=ttl)
        replicate([key])  # a block or mute: a read a replica answers hides them too


def get_hidden_raw(user_id: int) -> bytes | None:
    """The cached list as stored (None: not cached). On a cluster a hedged scatter round with
    the read deadline: a node (and replica) that does not answer makes it a miss, read from
    PostgreSQL."""
    key = hidden_key(user_id)
    if is_cluster():
        raw = scatter([(key, ("GET", key))], settings.FEEDSITE_READ_DEADLINE_MS / 1000)[0][0]
        return raw if isinstance(raw, bytes) else None
    return round_trip(("GET", key))[0]
