"""Bulk hydration of activity ids: the Redis body cache first, PostgreSQL for the rest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from activities.selectors import activities_by_ids, activity_to_dict, encode_body

from . import store


def hydrate(
    ids: Sequence[int], cached: Mapping[int, bytes | None] | None = None
) -> dict[int, dict[str, Any]]:
    """Bodies by id; a deleted activity is absent. ``cached`` holds raw bodies already read
    (None: read, not cached); the other ids cost one Redis round trip. A body missing from the
    cache is loaded from the database (one query) and cached again."""
    if not ids:
        return {}
    raw: dict[int, bytes | None] = {}
    unknown = []
    for aid in ids:
        if cached is not None and aid in cached:
            raw[aid] = cached[aid]
        else:
            unknown.append(aid)
    if unknown:
        raw.update(store.get_bodies(unknown))
    bodies = {aid: orjson.loads(body) for aid in ids if (body := raw.get(aid))}
    missing = [aid for aid in ids if aid not in bodies]
    if missing:
        loaded = {aid: activity_to_dict(a) for aid, a in activities_by_ids(missing).items()}
        store.set_bodies({aid: encode_body(b) for aid, b in loaded.items()}, best_effort=True)
        bodies.update(loaded)
    return bodies
