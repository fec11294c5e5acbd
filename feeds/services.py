"""Feed changes driven by follows: backfill on follow, purge on unfollow (one user's key each)."""

from __future__ import annotations

from activities.models import Activity
from activities.selectors import recent_activity_ids
from follows.selectors import follower_count

from . import store
from .conf import get_conf

PURGE_CHUNK = 1000


def feed_follow_backfill(*, follower_id: int, followee_id: int) -> None:
    """Copy the followee's most recent activities into the follower's feed (push authors only:
    a pull author's activities are merged at read time anyway)."""
    store.drop_pull_authors(follower_id)
    conf = get_conf()
    followers = follower_count(user_id=followee_id)
    if followers == conf.celebrity_threshold:  # this follow made the author a pull author
        store.bump_pull_version()
    if followers >= conf.celebrity_threshold:
        return
    ids = recent_activity_ids(actor_id=followee_id, limit=conf.follow_backfill_count)
    if ids:
        store.add_to_feed(follower_id, ids, conf.feed_max_length)


def feed_follow_purge(*, follower_id: int, followee_id: int) -> None:
    """Remove the followee's activities from the follower's feed without scanning it: only ids
    at or above the feed's oldest entry can be in it, and PostgreSQL lists those by index."""
    store.bump_unfollow_counter(followee_id)
    store.drop_pull_authors(follower_id)
    if follower_count(user_id=followee_id) == get_conf().celebrity_threshold - 1:
        # This unfollow made the author a push author again: readers stop pulling them, so
        # their recent activities go into the followers' feeds.
        store.bump_pull_version()
        from .tasks import author_to_push_task

        author_to_push_task.delay(followee_id)
    oldest = store.feed_oldest_id(follower_id)
    if oldest is None:
        return
    ids = list(
        Activity.objects.filter(actor_id=followee_id, id__gte=oldest)
        .order_by("-id")
        .values_list("id", flat=True)
    )
    for start in range(0, len(ids), PURGE_CHUNK):
        store.remove_from_feeds([follower_id], ids[start : start + PURGE_CHUNK])
