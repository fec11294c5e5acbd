"""Feed changes driven by the rest of the project (feeds.receivers calls these) and by
operators: the fan-out hand-off, backfill on follow, purge on unfollow, a new or deleted user,
a settings change."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from activities.ids import make_id
from activities.models import Activity
from activities.selectors import recent_activity_ids
from follows.selectors import (
    ObjectKey,
    about,
    activity_sources_from,
    followed_among,
    followee_ids_among,
    follower_count,
    follower_ids_in_range,
    follows,
    hidden_author_ids,
    object_activity_ids,
    object_follower_count,
)

from . import fanout, notifications, store
from .conf import FeedConf, get_conf, invalidate_conf
from .followees import followees_changed
from .models import FanoutJob, FeedSettings
from .read import hidden_authors
from .selectors import object_removals_pending, removals_pending
from .store import objects as object_store
from .store.followees import object_source
from .tasks import fanout_start_task, feeds_forget_ids_task, threshold_changed_task

log = logging.getLogger("feeds.services")
PURGE_CHUNK = 1000


def fanout_job_begin(
    *,
    activity_id: int,
    actor_id: int,
    kind: str,
    home: bool = True,
    objects: list[ObjectKey] | None = None,
) -> None:
    """The hand-off of a publish or a delete: the job row is written in the caller's transaction
    (a crash before the enqueue leaves a pending job the sweeper finds) and its id is enqueued
    when that transaction commits. A second call for the same activity and kind is a no-op.
    ``objects``: what a deleted activity was about (its remove job visits their followers;
    the row is gone when it runs)."""
    defaults: dict = {"actor_id": actor_id, "home": home}
    if objects:
        defaults["boundaries"] = {"objects": [list(o) for o in objects]}
    job, created = FanoutJob.objects.get_or_create(
        activity_id=activity_id, kind=kind, defaults=defaults
    )
    if created:
        job_id = job.id
        transaction.on_commit(lambda: fanout_start_task.delay(job_id), robust=True)


def author_mode_update(author_id: int, conf: FeedConf) -> str:
    """The author's mode under the current count of followers, recorded; when it changed (this
    follow or unfollow, or a concurrent one, crossed the threshold: exactly one caller sees
    it), readers' cached pull-author lists go stale, and an author who became a push author
    has their recent activities pushed into their followers' feeds."""
    mode = "pull" if conf.is_pull_author(follower_count(user_id=author_id)) else "push"
    before = store.author_mode_swap(author_id, mode) or "push"  # never recorded: as most are
    if before != mode:
        store.bump_pull_version()
        if mode == "push":
            # The re-push is recorded in PostgreSQL first (its jobs go back to pending), then
            # sent: with the broker down the sweeper sends them, the crossing is not lost.
            jobs_send(fanout.author_repush(author_id=author_id))
    return mode


def jobs_send(job_ids: list[int]) -> None:
    """Enqueue pending jobs; with the broker unreachable they stay pending for the sweeper
    (FEEDSITE_SWEEP_PENDING_SECONDS), never lost and never failing the caller."""
    try:
        for job_id in job_ids:
            fanout_start_task.delay(job_id)
    except BrokerError as exc:
        log.warning("broker unavailable, %d jobs left to the sweeper: %s", len(job_ids), exc)


def feed_follow_backfill(*, follower_id: int, followee_id: int) -> None:
    """Copy the followee's most recent activities into the follower's feed (push authors only:
    a pull author's activities are merged at read time anyway)."""
    store.drop_pull_authors(follower_id)
    if followee_id not in hidden_authors(follower_id):  # a muted author stays unheard
        store.announce_follow(follower_id, followee_id, following=True)  # open streams listen
    conf = get_conf()
    if author_mode_update(followee_id, conf) == "pull":
        return
    # Recorded before the copy: some of these may have been published while the author was a
    # pull author (their recorded mode can lag concurrent follows), and a delete of one must
    # then visit the followers' feeds (store.went_push_since).
    store.mark_went_push(followee_id, make_id(timezone.now()))
    wanted = conf.follow_backfill_count
    ids = recent_activity_ids(actor_id=followee_id, limit=wanted + 1)
    if ids[:wanted]:
        store.add_to_feed(follower_id, ids[:wanted], conf.feed_max_length)
    if len(ids) > wanted:
        # Older activities of theirs are left out: the feed no longer holds its whole history
        # (pages past its oldest entry come from PostgreSQL, feeds.read.feed_page).
        store.feed_mark_partial(follower_id)


def feed_follow_purge(*, follower_id: int, followee_id: int) -> None:
    """Remove the followee's activities from the follower's feed without scanning it: only ids
    at or above the feed's oldest entry can be in it, and PostgreSQL lists those by index. An
    activity about an object the follower still follows stays (that source still brings it)."""
    store.bump_unfollow_counter(followee_id)
    store.drop_pull_authors(follower_id)
    store.announce_follow(follower_id, followee_id, following=False)
    oldest = store.feed_oldest_id(follower_id)
    if oldest is not None:
        sources = activity_sources_from(actor_id=followee_id, min_id=oldest)
        kept = followed_among(
            user_id=follower_id, objects=[o for _, named in sources.values() for o in named]
        )
        ids = [i for i, (_, named) in sources.items() if not kept.intersection(named)]
        ids += [i for i in removals_pending(actor_id=followee_id) if i >= oldest]
        _feed_remove(follower_id, ids)
    author_mode_update(followee_id, get_conf())  # last: nothing it does can skip the purge


def _feed_remove(user_id: int, ids: list[int]) -> None:
    for start in range(0, len(ids), PURGE_CHUNK):
        store.remove_from_feeds([user_id], ids[start : start + PURGE_CHUNK])


# --- objects (``object_type:object_id``) as feed sources ---------------------------------------


def object_mode_update(obj: ObjectKey, conf: FeedConf) -> str:
    """The object's mode under its current count of followers, recorded (as author_mode_update):
    when it changed, readers' cached pull-source lists go stale, and an object that became a
    push object has its recent activities pushed into its followers' feeds."""
    count = object_follower_count(object_type=obj[0], object_id=obj[1])
    mode = "pull" if conf.is_pull_author(count) else "push"
    before = object_store.object_mode_swap(obj, mode) or "push"
    if before != mode:
        store.bump_pull_version()
        if mode == "push":
            jobs_send(fanout.object_repush(obj=obj, conf=conf))  # recorded first, then sent
    return mode


def object_follow_backfill(*, user_id: int, object_type: str, object_id: str) -> None:
    """After an object follow committed: the reader's cached pull sources go; a push object's
    most recent activities (follow_backfill_count of them, as object or target) are copied into
    the reader's feed (a pull object's are merged at read time anyway)."""
    obj = (object_type, object_id)
    store.drop_pull_authors(user_id)
    source = object_source(object_type, object_id)
    followees_changed(follower_id=user_id, followee_id=source, following=True)
    store.announce_follow(user_id, source, following=True)  # open streams listen
    conf = get_conf()
    if object_mode_update(obj, conf) == "pull":
        return
    # Recorded before the copy, as for authors: a delete of one of these published while the
    # object was pulled then visits its followers (object_went_push_since).
    object_store.mark_objects_went_push([obj], make_id(timezone.now()))
    wanted = conf.follow_backfill_count
    ids = object_activity_ids(
        object_type=object_type, object_id=object_id, before_id=None, limit=wanted + 1
    )
    if ids[:wanted]:
        store.add_to_feed(user_id, ids[:wanted], conf.feed_max_length)
    if len(ids) > wanted:
        store.feed_mark_partial(user_id)  # older ones left out: past them, PostgreSQL


def object_follow_purge(*, user_id: int, object_type: str, object_id: str) -> None:
    """After an object unfollow committed: the object's activities leave the reader's feed
    (only ids at or above its oldest entry, listed by index), except those the reader made and
    those another source still brings: their author, or their other object, followed now
    (whenever that follow began)."""
    obj = (object_type, object_id)
    object_store.bump_object_unfollow_counter(obj)  # fan-out in flight checks after its writes
    store.drop_pull_authors(user_id)
    source = object_source(object_type, object_id)
    followees_changed(follower_id=user_id, followee_id=source, following=False)
    store.announce_follow(user_id, source, following=False)
    oldest = store.feed_oldest_id(user_id)
    if oldest is not None:
        sources = activity_sources_from(obj=obj, min_id=oldest)
        authors = followee_ids_among(
            follower_id=user_id, user_ids={actor for actor, _ in sources.values()}
        )
        others = followed_among(
            user_id=user_id,
            objects=[o for _, named in sources.values() for o in named if o != obj],
        )
        gone = [
            aid
            for aid, (actor, named) in sources.items()
            if actor != user_id and actor not in authors and not others.intersection(named)
        ]
        gone += [i for i in object_removals_pending(obj=obj) if i >= oldest]
        _feed_remove(user_id, gone)
    object_mode_update(obj, get_conf())  # last, as for authors


def author_forget_begin(*, author_id: int) -> None:
    """A user is about to be deleted (their activities and follows go in the same cascade, so
    the removal fan-out of each activity would find no followers left): read now, inside the
    deleting transaction, who follows them and which of their ids feeds can hold, and once
    that commits take those ids out of those feeds, in batches. A pull author's followers
    hold none of their ids (they were merged at read time), so there is nothing to read."""
    conf = get_conf()
    if conf.is_pull_author(follower_count(user_id=author_id)):
        return
    ids = recent_activity_ids(actor_id=author_id, limit=conf.feed_max_length)
    followers = follower_ids_in_range(followee_id=author_id, lo=None, hi=None)
    if not ids or not followers:
        return
    size = conf.fanout_batch_size

    def enqueue() -> None:
        for start in range(0, len(followers), size):
            feeds_forget_ids_task.delay(followers[start : start + size], ids)

    transaction.on_commit(enqueue, robust=True)


def feed_forget(*, user_id: int) -> None:
    """A deleted user: their feed, timeline, cached pull-author list and notification feed
    leave Redis (their Notification rows went with the user)."""
    store.user_forget(user_id)
    store.notifications_forget(user_id)


def feed_settings_update(**values: int) -> FeedConf:
    """Change settings and drop the cached snapshot so every process sees them at once."""
    row, _ = FeedSettings.objects.get_or_create(pk=1)
    old_threshold = row.celebrity_threshold
    for name, value in values.items():
        if name not in FeedConf.__dataclass_fields__:
            raise ValueError(f"unknown feed setting {name!r}")
        setattr(row, name, value)
    row.full_clean()
    row.save()
    settings_changed(old_threshold=old_threshold, new_threshold=row.celebrity_threshold)
    return get_conf()


def settings_changed(*, old_threshold: int, new_threshold: int) -> None:
    """After a settings change (service or admin): every process sees it at once, and a raised
    threshold fans out again the recent activities of authors who are push authors now."""
    invalidate_conf()
    if new_threshold > old_threshold:
        transaction.on_commit(
            lambda: threshold_changed_task.delay(old_threshold, new_threshold), robust=True
        )


def hidden_refresh(*, user_ids: list[int]) -> None:
    """Rewrite the cached hidden-author lists of users whose blocks or mutes changed (after the
    change committed: a reader filling a miss meanwhile never overwrites this)."""
    for user_id in user_ids:
        ids = hidden_author_ids(user_id=user_id)
        store.set_hidden(user_id, ids, settings.FEEDSITE_PULL_AUTHORS_CACHE_SECONDS)
        store.announce_hidden(user_id)  # open streams take the new list


def mute_changed(*, muter_id: int, muted_id: int, muted: bool) -> None:
    """A mute or unmute: the muter's reads hide (or show) the muted user's activities from now
    on; their open streams stop (or start again) hearing them."""
    hidden_refresh(user_ids=[muter_id])
    if muted:
        notifications.notifications_quiet(user_id=muter_id, actor_ids=[muted_id])
        store.announce_follow(muter_id, muted_id, following=False)
    elif follows(follower_id=muter_id, followee_id=muted_id) and muted_id not in hidden_authors(
        muter_id
    ):
        store.announce_follow(muter_id, muted_id, following=True)


def block_changed(*, blocker_id: int, blocked_id: int, blocked: bool = True) -> None:
    """A block or unblock: both users' reads hide (or show) each other. The follows a block
    removed purged the feeds and told open streams already (feed_follow_purge)."""
    hidden_refresh(user_ids=[blocker_id, blocked_id])
    if blocked:
        notifications.notifications_quiet(user_id=blocker_id, actor_ids=[blocked_id])
        notifications.notifications_quiet(user_id=blocked_id, actor_ids=[blocker_id])


def activity_published(*, activity: Activity) -> None:
    """The hand-off of a new activity, in its transaction: a publish job when it goes to home
    feeds, the Notification rows and a notify job when it names users."""
    if activity.home:
        fanout_job_begin(
            activity_id=activity.id, actor_id=activity.actor_id, kind=FanoutJob.Kind.PUBLISH
        )
    if activity.notify and notifications.notifications_begin(activity=activity):
        fanout_job_begin(
            activity_id=activity.id, actor_id=activity.actor_id, kind=FanoutJob.Kind.NOTIFY
        )


def activity_removed(*, activity: Activity) -> None:
    """The hand-off of a deleted activity: its remove job (home feeds, timelines, notification
    feeds), which names the objects it was about (their followers and timelines)."""
    fanout_job_begin(
        activity_id=activity.id,
        actor_id=activity.actor_id,
        kind=FanoutJob.Kind.REMOVE,
        home=activity.home,
        objects=about(
            activity.object_type, activity.object_id, activity.target_type, activity.target_id
        ),
    )


def follow_notify(*, follower_id: int, followee_id: int) -> None:
    notifications.follow_notify(follower_id=follower_id, followee_id=followee_id)
