"""Rebuilding feeds and timelines from PostgreSQL (the truth; Redis is a cache that can be lost).

What a rebuilt feed holds is feeds.consistency's definition (`feed_ids_to_build`): the reader's
own activities, those of the push authors they follow and those about the push objects they
follow; pull authors and pull objects are merged at read time (their timelines)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from activities.ids import make_id
from activities.selectors import recent_activity_ids
from follows.selectors import ObjectKey, followed_objects, object_activity_ids

from . import consistency, store
from .conf import FeedConf, get_conf
from .store import objects as object_store
from .store.keys import is_object_timeline_key, object_digest, object_timeline_digest

log = logging.getLogger("feeds.rebuild")
WAIT_FOR_OTHER_REBUILD_SECONDS = 5.0


def feed_ttl(conf: FeedConf) -> int:
    return conf.inactive_after_days * 86_400


@dataclass
class RebuildResult:
    users: int = 0
    entries: int = 0


def authors_seen_as_push(reader_id: int, entries: list[tuple[int, int]]) -> None:
    """A rebuild takes the authors below the threshold now (PostgreSQL's counters) as push
    authors, which their recorded mode may not have caught (a dip under the threshold between
    two follows): their pull-published activities now sit in a feed, so a delete of one must
    visit the followers (feeds.fanout, store.went_push_since)."""
    authors = {a for _, a in entries if a != reader_id}
    if authors:
        store.mark_went_push_many(sorted(authors), make_id(timezone.now()))


def objects_seen_as_push(reader_id: int, conf: FeedConf) -> None:
    """As authors_seen_as_push, for the objects below the threshold now whose activities a
    rebuild put in the reader's feed (a delete of one pulled at publish then visits)."""
    pushed = consistency.push_followed_objects(user_id=reader_id, conf=conf)
    object_store.mark_objects_went_push(pushed, make_id(timezone.now()))


def users_rebuild(
    *, user_ids: list[int], since: datetime | None = None, dry_run: bool = False
) -> RebuildResult:
    """Rebuild the feed and the timeline of each user. Idempotent: ids are merged in (ZADD), so a
    second run, or a run beside live fan-out, changes nothing that is right."""
    conf = get_conf()
    result = RebuildResult()
    for uid in user_ids:
        if not dry_run:
            store.mark_rebuilding(uid)  # before the read: fan-out meanwhile is parked
        entries = consistency.feed_entries_to_build(user_id=uid, conf=conf, since=since)
        ids = [i for i, _ in entries]
        own = recent_activity_ids(actor_id=uid, limit=conf.feed_max_length, since=since)
        if not dry_run:
            authors_seen_as_push(uid, entries)
            objects_seen_as_push(uid, conf)
            store.write_feed(uid, ids, conf.feed_max_length, feed_ttl(conf))
            store.unlock_rebuild(uid)
            if own:  # (an author without activities needs no timeline until a read asks)
                store.write_timeline(uid, own, conf.feed_max_length)
        result.users += 1
        result.entries += len(ids) + len(own)
    return result


def timelines_rebuild(*, author_ids: list[int]) -> None:
    """Rebuild authors' timelines from PostgreSQL (a read found them missing). Idempotent."""
    conf = get_conf()
    for author_id in author_ids:
        ids = recent_activity_ids(actor_id=author_id, limit=conf.feed_max_length)
        store.write_timeline(author_id, ids, conf.feed_max_length)
    store.count_stat("timeline_rebuilds", len(author_ids))


def object_timelines_rebuild(*, objects: list[ObjectKey], dry_run: bool = False) -> int:
    """Rebuild objects' timelines from PostgreSQL: the newest feed_max_length live home
    activities whose object or target each one is (a read found them missing, a publish
    found a followed object's gone, a backfill). Idempotent (ids merged in). Returns entries."""
    conf = get_conf()
    entries = 0
    for object_type, object_id in dict.fromkeys(objects):
        ids = object_activity_ids(
            object_type=object_type, object_id=object_id, before_id=None, limit=conf.feed_max_length
        )
        if not dry_run:
            object_store.object_timeline_write((object_type, object_id), ids, conf.feed_max_length)
        entries += len(ids)
    if not dry_run:
        store.count_stat("timeline_rebuilds", len(objects))
    return entries


def object_ids_in_range(*, lo: int, hi: int | None) -> list[ObjectKey]:
    """The followed objects whose counter row id lies in (lo, hi] (None: open), by id."""
    from follows.models import ObjectStats

    rows = ObjectStats.objects.filter(id__gt=lo, followers_count__gt=0)
    if hi is not None:
        rows = rows.filter(id__lte=hi)
    return list(rows.order_by("id").values_list("object_type", "object_id"))


def sources_rebuild(*, user_id: int, keys: list[str]) -> None:
    """Rebuild the timelines a read of ``user_id``'s feed found missing: pull authors' by the id
    in their key, pull objects' by their digest among the objects the reader follows."""
    authors = [store.timeline_author(k) for k in keys if not is_object_timeline_key(k)]
    digests = {object_timeline_digest(k) for k in keys if is_object_timeline_key(k)}
    if authors:
        timelines_rebuild(author_ids=authors)
    if digests:
        mine = followed_objects(user_id=user_id)
        object_timelines_rebuild(objects=[o for o in mine if object_digest(*o) in digests])


def feed_ensure(*, user_id: int, conf: FeedConf) -> bool:
    """Make sure the reader's feed exists, rebuilding it from PostgreSQL when it is missing;
    concurrent first reads rebuild once (a lock), the others wait for it. True if rebuilt here."""
    if store.touch_feed(user_id, feed_ttl(conf)):
        return False
    if store.lock_rebuild(user_id):
        try:
            if store.touch_feed(user_id, feed_ttl(conf)):
                return False  # another reader rebuilt it between our check and our lock
            started = time.perf_counter()
            # The lock is the rebuild marker: fan-out from now on is parked, and write_feed
            # merges it in.
            entries = consistency.feed_entries_to_build(user_id=user_id, conf=conf)
            ids = [i for i, _ in entries]
            authors_seen_as_push(user_id, entries)
            objects_seen_as_push(user_id, conf)
            store.write_feed(user_id, ids, conf.feed_max_length, feed_ttl(conf))
            store.count_stat("rebuilds")
            log.info(
                "lazy rebuild user=%s entries=%s in %.1f ms",
                user_id,
                len(ids),
                (time.perf_counter() - started) * 1000,
            )
            return True
        finally:
            store.unlock_rebuild(user_id)
    deadline = time.monotonic() + WAIT_FOR_OTHER_REBUILD_SECONDS
    while time.monotonic() < deadline and store.rebuild_locked(user_id):
        time.sleep(0.01)
    return False


def user_ids_in_range(*, lo: int, hi: int) -> list[int]:
    from django.contrib.auth import get_user_model

    return list(
        get_user_model()
        .objects.filter(id__gt=lo, id__lte=hi)
        .order_by("id")
        .values_list("id", flat=True)
    )


def backfill_progress(run_id: str, result: RebuildResult, objects: int = 0) -> None:
    """Celery backfill tasks report here; the command polls it."""
    store.count_stat(f"backfill:{run_id}:users", result.users)
    store.count_stat(f"backfill:{run_id}:entries", result.entries)
    if objects:
        store.count_stat(f"backfill:{run_id}:objects", objects)
