"""What a correct feed is, in one place: the rebuild, the backfill and the checker
(verify_feeds) all read it from here.

For a reader whose feed exists (a reader without one is rebuilt on their next read, not
"missing"), given the current follow graph and threshold, not the history of how the feed was
built:

  required  every live activity by the reader, or by a followee who is a push author now and
            posted it after the follow began, or whose object or target is an object the reader
            follows that is a push object now (below the threshold) and posted after that
            follow began, that is newer than the feed's oldest entry (all of them while the
            feed holds fewer than feed_max_length entries)
  allowed   besides: any other live activity of the reader or of a current followee, or about
            an object the reader follows now (follow backfill; a source that became a pull
            source after posting)
  never     a deleted activity, or one that reaches the reader through no source they follow
            (author or object), or a duplicate (a sorted set cannot hold one)

A rebuilt feed holds the newest feed_max_length live activities of the reader, of their push
followees and about their push objects, whenever posted: every required entry, and the
backfilled ones a reader saw before. An object's timeline is checked as an author's
(object_timeline_check): the newest live home activities whose object or target it is.
A pull author's timeline must hold their newest live activities (up to feed_max_length) that go
to home feeds (timeline_check): every author's built timeline is kept so (publish adds, delete
takes out, whatever the author's mode), since a push author becomes a pull author, timeline as
it is, when they cross the threshold. Required: those newest ids, except an activity whose
publish job has not started (it is on its way); allowed besides: any other live home activity
of the author; never: a deleted activity (a ghost), another author's, or one that goes to no
home feed.

A delete takes an id out of a capped set but brings back none that the cap trimmed earlier (a
rebuild does): a feed or timeline below its cap may rightly lack older ids. So neither check
requires an id below ``trim_floor``: the cap-th newest of the live and the deleted ids that
could have been in it. No id at or above it was ever trimmed (a trim keeps the newest cap ids,
each one of those).
A built notification feed holds the user's newest Notification rows (notification_check).
Feeds hold ids, never bodies: an edit changes the one cached body of an activity (and its
edited_at), not which feeds hold it, so an edited activity is checked as any other; a deleted
one is a ghost until its remove job has run, whatever its body key holds (the tombstone that
hides it from reads at once).
The pure part (`judge`) decides from sets; the `*_check` functions gather them from PostgreSQL
and Redis, through feeds.store (which alone sends Redis commands).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection
from django.db.models import Q

from activities.models import Activity
from follows.models import Follow
from follows.selectors import (
    ObjectKey,
    about,
    followed_object_activity_entries,
    followed_objects_below,
    followed_objects_since,
    object_activity_ids,
)

from . import store
from .conf import FeedConf, get_conf
from .models import FanoutJob, Notification
from .store import objects as object_store


@dataclass
class FeedReport:
    user_id: int
    missing: list[int] = field(default_factory=list)  # required, not in the feed
    extra: list[int] = field(default_factory=list)  # in the feed, not allowed

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra


def judge(feed: set[int], required: set[int], allowed: set[int]) -> tuple[list[int], list[int]]:
    """(missing, extra), newest first. Pure."""
    missing = sorted(required - feed, reverse=True)
    extra = sorted(feed - required - allowed, reverse=True)
    return missing, extra


def trim_floor(live: list[int], deleted: list[int], cap: int) -> int:
    """The lowest id a capped set surely still holds if it ever held it: the cap-th newest of
    ``live`` and ``deleted`` (each newest first, at least ``cap`` long when there are that
    many); 0 when there are fewer than ``cap``. Pure."""
    merged = sorted({*live, *deleted}, reverse=True)[:cap]
    return merged[-1] if len(merged) >= cap else 0


def deleted_ids(*, author_ids: list[int], limit: int) -> list[int]:
    """The newest ``limit`` deleted home activities of these authors (their remove jobs outlive
    the rows), newest first."""
    return list(
        FanoutJob.objects.filter(kind=FanoutJob.Kind.REMOVE, actor_id__in=author_ids, home=True)
        .order_by("-activity_id")
        .values_list("activity_id", flat=True)[:limit]
    )


def followees(*, user_id: int) -> dict[int, datetime]:
    """Everyone the reader follows, with when the follow began."""
    return dict(Follow.objects.filter(follower_id=user_id).values_list("followee_id", "created_at"))


def push_followees(*, user_id: int, conf: FeedConf) -> dict[int, datetime]:
    """The reader's followees who are push authors now (below the threshold), with when the
    follow began. One query."""
    return dict(
        Follow.objects.filter(follower_id=user_id)
        .exclude(followee__stats__followers_count__gte=conf.celebrity_threshold)
        .values_list("followee_id", "created_at")
    )


def push_followed_objects(*, user_id: int, conf: FeedConf) -> dict[ObjectKey, datetime]:
    """The objects the reader follows that are push objects now (below the threshold), with
    when the follow began. One query."""
    return followed_objects_below(user_id=user_id, threshold=conf.celebrity_threshold)  # type: ignore[return-value]


def deleted_ids_about(*, objects: list[ObjectKey], limit: int) -> list[int]:
    """The newest ``limit`` deleted home activities about any of ``objects`` (as object or
    target: their remove jobs name them), newest first."""
    wanted = set(objects)
    if not wanted:
        return []
    jobs = FanoutJob.objects.filter(kind=FanoutJob.Kind.REMOVE, home=True)
    if connection.vendor == "postgresql":  # jsonb containment, not every job in Python
        match = Q(pk__in=[])
        for obj in wanted:
            match |= Q(boundaries__contains={"objects": [list(obj)]})
        jobs = jobs.filter(match)
    found: list[int] = []
    rows = jobs.order_by("-activity_id").values_list("activity_id", "boundaries")
    for activity_id, plan in rows.iterator(chunk_size=1000):
        named = plan.get("objects", []) if isinstance(plan, dict) else []
        if any((t, i) in wanted for t, i in named):
            found.append(activity_id)
            if len(found) >= limit:
                break
    return found


def _newest(*lists: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """(id, actor) entries of several newest-first lists: distinct ids, newest first, the
    first ``limit``. Pure."""
    merged = dict(entry for part in lists for entry in part)
    return sorted(merged.items(), reverse=True)[:limit]


def feed_ids_to_build(
    *, user_id: int, conf: FeedConf | None = None, since: datetime | None = None
) -> list[int]:
    """What a rebuilt feed holds: the newest feed_max_length live activities of the reader, of
    their push followees and about their push objects (``since``: only those posted from then
    on). By index on (actor, id) and on (object or target, id)."""
    return [i for i, _ in feed_entries_to_build(user_id=user_id, conf=conf, since=since)]


def feed_entries_to_build(
    *, user_id: int, conf: FeedConf | None = None, since: datetime | None = None
) -> list[tuple[int, int]]:
    """feed_ids_to_build with each id's author: (id, actor id), newest first."""
    conf = conf or get_conf()
    cap = conf.feed_max_length
    authors = [user_id, *push_followees(user_id=user_id, conf=conf)]
    qs = Activity.objects.filter(actor_id__in=authors, home=True)
    if since is not None:
        qs = qs.filter(time__gte=since)
    by_authors = list(qs.order_by("-id").values_list("id", "actor_id")[:cap])
    by_objects = followed_object_activity_entries(
        user_id=user_id, limit=cap, below_threshold=conf.celebrity_threshold, since=since
    )
    return _newest(by_authors, by_objects, limit=cap)


def required_ids(*, user_id: int, conf: FeedConf, floor: int = 0) -> set[int]:
    """The entries a feed must hold (ids >= ``floor``, the feed's oldest when it is full)."""
    wanted = Q(actor_id=user_id)
    for author, since in push_followees(user_id=user_id, conf=conf).items():
        wanted |= Q(actor_id=author, time__gte=since)
    by_authors = list(
        Activity.objects.filter(wanted, id__gte=floor, home=True)
        .order_by("-id")
        .values_list("id", "actor_id")[: conf.feed_max_length]
    )
    by_objects = followed_object_activity_entries(
        user_id=user_id,
        limit=conf.feed_max_length,
        below_threshold=conf.celebrity_threshold,
        from_follow=True,
        min_id=floor,
    )
    return {i for i, _ in _newest(by_authors, by_objects, limit=conf.feed_max_length)}


def reaches(feed: set[int], *, authors: set[int], objects: set[ObjectKey]) -> set[int]:
    """Of the ids in a feed, the live home activities that reach the reader through a source
    they follow now (``authors``: the reader and their followees; ``objects``: followed).
    One query."""
    rows = Activity.objects.filter(id__in=feed, home=True).values_list(
        "id", "actor_id", "object_type", "object_id", "target_type", "target_id"
    )
    return {
        aid
        for aid, actor, *named in rows
        if actor in authors or any(o in objects for o in about(*named))
    }


def feed_check(user_id: int, conf: FeedConf | None = None) -> FeedReport | None:
    """The reader's feed against the definition; None when the feed does not exist."""
    conf = conf or get_conf()
    if not store.feed_exists(user_id):
        return None
    feed = set(store.feed_ids(user_id))
    floor = min(feed) if len(feed) >= conf.feed_max_length else 0
    candidates = sorted(required_ids(user_id=user_id, conf=conf), reverse=True)
    authors = [user_id, *push_followees(user_id=user_id, conf=conf)]
    pushed = list(push_followed_objects(user_id=user_id, conf=conf))
    gone = deleted_ids(author_ids=authors, limit=conf.feed_max_length)
    gone += deleted_ids_about(objects=pushed, limit=conf.feed_max_length)
    floor = max(floor, trim_floor(candidates, gone, conf.feed_max_length))
    required = {i for i in candidates if i >= floor}
    allowed = reaches(
        feed,
        authors={user_id, *followees(user_id=user_id)},
        objects=set(followed_objects_since(user_id=user_id)),
    )
    missing, extra = judge(feed, required, allowed)
    return FeedReport(user_id, missing, extra)


def feed_repair(report: FeedReport, conf: FeedConf | None = None) -> None:
    """Add what is missing, take out what must not be there."""
    conf = conf or get_conf()
    if report.extra:
        store.remove_from_feeds([report.user_id], report.extra)
    if report.missing:
        store.add_to_feed(report.user_id, report.missing, conf.feed_max_length)


def timeline_check(author_id: int, conf: FeedConf | None = None) -> FeedReport | None:
    """An author's timeline against PostgreSQL (see the module's definition); None when it is
    not built (the next read that needs it rebuilds it)."""
    conf = conf or get_conf()
    if not store.timeline_exists(author_id):
        return None
    line = set(store.timeline_ids(author_id))
    cap = conf.feed_max_length
    own = Activity.objects.filter(actor_id=author_id, home=True)
    newest = list(own.order_by("-id").values_list("id", flat=True)[:cap])
    floor = trim_floor(newest, deleted_ids(author_ids=[author_id], limit=cap), cap)
    on_its_way = set(
        FanoutJob.objects.filter(
            kind=FanoutJob.Kind.PUBLISH, state=FanoutJob.State.PENDING, activity_id__in=newest
        ).values_list("activity_id", flat=True)
    )
    required = {i for i in newest if i >= floor} - on_its_way
    allowed = set(own.filter(id__in=line).values_list("id", flat=True))
    missing, extra = judge(line, required, allowed)
    return FeedReport(author_id, missing, extra)


def timeline_repair(report: FeedReport, conf: FeedConf | None = None) -> None:
    """Take out what must not be there (ghosts first, so the cap keeps live ids), then merge
    in what is missing (capped)."""
    conf = conf or get_conf()
    if report.extra:
        store.remove_from_timeline(report.user_id, report.extra)
    if report.missing:
        store.write_timeline(report.user_id, report.missing, conf.feed_max_length)


@dataclass
class ObjectTimelineReport(FeedReport):
    """An object timeline's report (``user_id`` is 0: the object is ``obj``)."""

    obj: ObjectKey = ("", "")


def object_timeline_check(obj: ObjectKey, conf: FeedConf | None = None) -> FeedReport | None:
    """An object's timeline against PostgreSQL, as timeline_check for an author: required its
    newest live home activities (as object or target) but those on their way; allowed any of
    them; None when it is not built."""
    conf = conf or get_conf()
    if not object_store.object_timeline_exists(obj):
        return None
    line = set(object_store.object_timeline_ids(obj))
    cap = conf.feed_max_length
    newest = object_activity_ids(object_type=obj[0], object_id=obj[1], before_id=None, limit=cap)
    floor = trim_floor(newest, deleted_ids_about(objects=[obj], limit=cap), cap)
    on_its_way = set(
        FanoutJob.objects.filter(
            kind=FanoutJob.Kind.PUBLISH, state=FanoutJob.State.PENDING, activity_id__in=newest
        ).values_list("activity_id", flat=True)
    )
    required = {i for i in newest if i >= floor} - on_its_way
    theirs = Q(object_type=obj[0], object_id=obj[1]) | Q(target_type=obj[0], target_id=obj[1])
    allowed = set(
        Activity.objects.filter(theirs, id__in=line, home=True).values_list("id", flat=True)
    )
    missing, extra = judge(line, required, allowed)
    return ObjectTimelineReport(0, missing, extra, obj=obj)


def object_timeline_repair(report: FeedReport, conf: FeedConf | None = None) -> None:
    """As timeline_repair, for an object's timeline."""
    conf = conf or get_conf()
    obj = report.obj  # type: ignore[attr-defined]
    if report.extra:
        object_store.object_timelines_remove([obj], report.extra)
    if report.missing:
        object_store.object_timeline_write(obj, report.missing, conf.feed_max_length)


def notification_check(user_id: int, conf: FeedConf | None = None) -> FeedReport | None:
    """A user's notification feed against PostgreSQL; None when it was never built. Required:
    their newest notification_max_length rows whose delivery finished (a notify job done) and
    whose activity lives; allowed: any of their rows (a delivery, or a delete, on its way)."""
    conf = conf or get_conf()
    if store.notification_counts(user_id) is None:
        return None
    feed = set(store.notification_ids_between(user_id, 1, 2**63 - 1))
    rows = Notification.objects.filter(recipient_id=user_id)
    delivered = FanoutJob.objects.filter(
        kind=FanoutJob.Kind.NOTIFY, state=FanoutJob.State.DONE
    ).values("activity_id")
    live = Activity.objects.values("id")
    required = set(
        rows.filter(activity_id__in=delivered)
        .filter(activity_id__in=live)
        .order_by("-activity_id")
        .values_list("activity_id", flat=True)[: conf.notification_max_length]
    )
    newest = sorted(rows.values_list("activity_id", flat=True), reverse=True)
    allowed = set(newest[: conf.notification_max_length])
    missing, extra = judge(feed, required, allowed)
    return FeedReport(user_id, missing, extra)


def notification_repair(report: FeedReport, conf: FeedConf | None = None) -> None:
    """Take out what must not be there, add what is missing (read or unread as in PostgreSQL)."""
    conf = conf or get_conf()
    if report.extra:
        store.notifications_remove([report.user_id], report.extra)
    unread = set(
        Notification.objects.filter(
            recipient_id=report.user_id, activity_id__in=report.missing, read=False
        ).values_list("activity_id", flat=True)
    )
    for activity_id in report.missing:
        store.notifications_add(
            [(report.user_id, activity_id in unread)], activity_id, conf.notification_max_length
        )
