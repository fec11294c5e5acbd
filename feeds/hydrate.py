"""Bulk hydration of activity ids: the Redis body cache first, PostgreSQL for the rest; and the
cache's side of an edit or a delete once it committed (feeds.receivers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from activities.models import Activity
from activities.selectors import (
    activities_by_ids,
    activity_to_dict,
    encode_body,
    format_edited_at,
)

from . import store
from .store.followees import object_source


def hydrate(
    ids: Sequence[int], cached: Mapping[int, bytes | None] | None = None
) -> dict[int, dict[str, Any]]:
    """Bodies by id; a deleted activity is absent. ``cached`` holds raw bodies already read
    (None: read, not cached; a tombstone: deleted); the other ids cost one Redis round trip. A
    body missing from the cache is loaded from the database (one query) and cached again; a
    deleted activity's tombstone is neither (it is not in the database, and nothing replaces
    the tombstone)."""
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
        raw.update(store.get_bodies(unknown, tombstones=True))
    bodies: dict[int, dict[str, Any]] = {}
    missing = []
    for aid in ids:
        body = raw.get(aid)
        if store.is_tombstone(body):
            continue  # deleted (its delete committed): absent, whatever PostgreSQL said before
        if body:
            bodies[aid] = orjson.loads(body)
        else:
            missing.append(aid)
    if missing:
        loaded = {aid: activity_to_dict(a) for aid, a in activities_by_ids(missing).items()}
        # Compare-and-set (store.set_bodies): a copy loaded before an edit or a delete
        # committed never replaces what that edit or delete wrote meanwhile.
        store.set_bodies({aid: encode_body(b) for aid, b in loaded.items()}, best_effort=True)
        _refill_confirm(loaded)
        bodies.update(loaded)
    return bodies


def _refill_confirm(loaded: Mapping[int, dict[str, Any]]) -> None:
    """After caching bodies loaded from PostgreSQL, ask it again whether they are still current.
    The compare-and-set alone cannot see an edit (or a delete) that committed and wrote its body
    (or tombstone) after our load, when that key was then evicted before our write: our older
    copy would land on a missing key and stay. Asked after our write, PostgreSQL shows any such
    edit or delete, and it is written again (compare-and-set: never over a newer one); one that
    commits later writes its own body after our write. One query, on the cold path only."""
    if not loaded:
        return
    now = dict(Activity.objects.filter(id__in=list(loaded)).values_list("id", "edited_at"))
    gone = [aid for aid in loaded if aid not in now]
    changed = [
        aid
        for aid, body in loaded.items()
        if aid in now and format_edited_at(now[aid]) != body.get("edited_at")
    ]
    if gone:
        store.bury_bodies(gone, replicated=False)  # the delete's bury waited for a replica
    if changed:
        fresh = {aid: activity_to_dict(a) for aid, a in activities_by_ids(changed).items()}
        store.set_bodies({aid: encode_body(b) for aid, b in fresh.items()}, best_effort=True)


def body_edited(*, activity: Activity) -> None:
    """After an edit of ``activity`` committed: its new body replaces the cached one (an older
    copy, never a newer edit nor a delete's tombstone), before the edit answers, so every later
    read on any process sees it; then open streams hear of it (``event: update``). Not fanned
    out again: feeds hold ids, the body is stored once. A Redis error raises (the edit answers
    503; it is committed, and the next edit or read of PostgreSQL is current)."""
    if store.replace_body(activity.id, encode_body(activity_to_dict(activity))):
        store.announce_update(activity.actor_id, activity.id)
        about = [(activity.object_type, activity.object_id)]
        if activity.target_type:
            about.append((activity.target_type, activity.target_id))
        store.announce_objects([object_source(t, i) for t, i in about], activity.id, update=True)


def body_deleted(*, activity_ids: Sequence[int]) -> None:
    """After a delete committed: the activities' tombstones, so that no read shows them from
    now on, whether or not a worker ever runs their remove jobs (which clean the feeds). A
    Redis error raises (the remove job buries them again before it cleans the feeds)."""
    store.bury_bodies(activity_ids)
