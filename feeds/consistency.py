"""What a correct feed is, in one place, and the check of Redis against it (verify_feeds).

For a reader whose feed exists (a reader without one is rebuilt on their next read, not
"missing"), given the current follow graph and threshold, not the history of how the feed was
built:

  required  every live activity by the reader, or by a followee who is a push author now and
            posted it after the follow began, that is newer than the feed's oldest entry (all of
            them while the feed holds fewer than feed_max_length entries)
  allowed   besides: any other live activity of the reader or of a current followee (follow
            backfill; an author who became a pull author after posting)
  never     a deleted activity, or one by someone the reader does not follow

A pull author's timeline must hold their newest live activities (up to feed_max_length).
The pure part (`judge`) decides from sets; `feed_check` gathers them from PostgreSQL and Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Q

from activities.models import Activity
from follows.models import Follow
from follows.selectors import follower_count

from . import store
from .conf import FeedConf, get_conf


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


def feed_check(user_id: int, conf: FeedConf | None = None) -> FeedReport | None:
    """The reader's feed against the definition; None when the feed does not exist."""
    conf = conf or get_conf()
    if not store.client().exists(store.feed_key(user_id)):
        return None
    feed = set(store.feed_ids(user_id))
    follows = dict(
        Follow.objects.filter(follower_id=user_id).values_list("followee_id", "created_at")
    )
    push = {
        author: since
        for author, since in follows.items()
        if not conf.is_pull_author(follower_count(user_id=author))
    }
    floor = min(feed) if len(feed) >= conf.feed_max_length else 0
    wanted = Q(actor_id=user_id)
    for author, since in push.items():
        wanted |= Q(actor_id=author, time__gte=since)
    required = set(
        Activity.objects.filter(wanted, id__gte=floor)
        .order_by("-id")
        .values_list("id", flat=True)[: conf.feed_max_length]
    )
    allowed = set(
        Activity.objects.filter(id__in=feed, actor_id__in=[user_id, *follows]).values_list(
            "id", flat=True
        )
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
