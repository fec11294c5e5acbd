"""Rebuilding feeds and timelines from PostgreSQL (the truth; Redis is a cache that can be lost).

What a rebuilt feed holds is feeds.consistency's definition (`feed_ids_to_build`): the reader's
own activities and those of the push authors they follow; pull authors are merged at read time."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from activities.ids import make_id
from activities.selectors import recent_activity_ids

from . import consistency, store
from .conf import FeedConf, get_conf

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


def backfill_progress(run_id: str, result: RebuildResult) -> None:
    """Celery backfill tasks report here; the command polls it."""
    store.count_stat(f"backfill:{run_id}:users", result.users)
    store.count_stat(f"backfill:{run_id}:entries", result.entries)
