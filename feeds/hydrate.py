"""Bulk hydration of activity ids: the Redis body cache first, PostgreSQL for the rest."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from activities.selectors import activities_by_ids, activity_to_dict, encode_body

from . import store


def hydrate(ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Bodies by id, in one Redis round trip plus at most one query; a deleted activity is absent.
    A body missing from the cache is loaded from the database and cached again."""
    if not ids:
        return {}
    cached = store.get_bodies(ids)
    bodies = {aid: json.loads(raw) for aid, raw in cached.items()}
    missing = [aid for aid in ids if aid not in bodies]
    if missing:
        loaded = {aid: activity_to_dict(a) for aid, a in activities_by_ids(missing).items()}
        store.set_bodies({aid: encode_body(b) for aid, b in loaded.items()})
        bodies.update(loaded)
    return bodies
