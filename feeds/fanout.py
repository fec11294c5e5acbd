"""Fan-out: plan, start, apply a batch, and the fan-in bookkeeping.

Every step is safe to run twice (at-least-once delivery): ZADD/ZREM are idempotent, a batch counts
itself once through a unique (job, batch_no) marker, and a job leaves `running` through one
conditional UPDATE that exactly one finisher wins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Exists, F, Q, Value, When
from django.utils import timezone

from activities.ids import make_id
from activities.models import Activity
from activities.selectors import activity_to_dict, encode_body, recent_activity_ids
from follows.selectors import (
    ObjectKey,
    about,
    audience_count,
    audience_ids_in_range,
    audience_plan,
    batch_ranges,
    followed_among,
    follower_count,
    follower_id_boundaries,
    follower_ids_in_range,
    object_activity_ids,
    object_follower_counts,
    objects_with_followers_in,
    user_ids_with_followers_in,
)

from . import notifications, store
from .conf import FeedConf, get_conf
from .models import FanoutBatch, FanoutDeadLetter, FanoutJob
from .rebuild import object_timelines_rebuild, timelines_rebuild
from .store import objects as object_store
from .store.failover import fanout_replicate
from .store.feeds import went_push_at
from .store.followees import object_source

log = logging.getLogger("feeds.fanout")
Job = FanoutJob


@dataclass(frozen=True)
class BatchRef:
    job_id: int
    batch_no: int
    lo: int | None
    hi: int | None


# --- a job's sources ---------------------------------------------------------------------------
#
# One fan-out job per activity covers every source the activity reaches followers through: its
# author's followers and the followers of its object and of its target (follows.selectors
# audience_*: the distinct users, each in exactly one batch, in shard order). A job whose
# activity is about no followed object keeps the earlier form: ``boundaries`` a list, the
# author's followers alone (strategy pull: none). Otherwise ``boundaries`` is a plan, fixed by
# the coordinator so that redelivery and replay see the same sources:
#   {"b": [boundaries], "author": visit the author's followers, "author_pull": the author was
#    pulled at read time (at or above the threshold), "push": [objects whose followers are
#    visited], "pull": [followed objects pulled at read time instead], "objects": [every object
#    the activity is about]}
# A remove job is written with {"objects": [...]} (its activity row is gone when it runs).
# A source at or above the celebrity threshold is pulled at read time (its timeline), not
# visited.


@dataclass(frozen=True)
class Sources:
    """Whose followers a job visits: the author's (``author``) and these objects'."""

    author: bool = True
    objects: tuple[ObjectKey, ...] = ()

    @property
    def author_only(self) -> bool:
        return self.author and not self.objects


def _keys(raw: object) -> list[ObjectKey]:
    return [(str(t), str(i)) for t, i in raw] if isinstance(raw, list) else []


def plan_boundaries(boundaries: object) -> list[int]:
    """A job's batch boundaries, from either form of ``boundaries``. Pure."""
    if isinstance(boundaries, dict):
        return list(boundaries.get("b", []))
    return list(boundaries) if isinstance(boundaries, list) else []


def plan_sources(boundaries: object) -> Sources:
    """Whose followers a job's batches visit, from either form of ``boundaries``. Pure."""
    if not isinstance(boundaries, dict) or "b" not in boundaries:
        return Sources()
    return Sources(bool(boundaries.get("author")), tuple(_keys(boundaries.get("push"))))


def plan_objects(boundaries: object) -> list[ObjectKey]:
    """Every object the job's activity is about (recorded in the plan; [] for the earlier
    form). Pure."""
    return _keys(boundaries.get("objects")) if isinstance(boundaries, dict) else []


def pulled_at_publish(published: FanoutJob | None) -> tuple[bool, set[ObjectKey]]:
    """Of a publish job: whether its author's followers were left to read the timeline, and
    which objects' followers were not visited. None (no job): nothing proven pulled."""
    if published is None:
        return False, set()
    plan = published.boundaries
    if not isinstance(plan, dict) or "b" not in plan:
        return published.strategy == Job.Strategy.PULL, set()
    pushed = set(_keys(plan.get("push")))
    return bool(plan.get("author_pull")), {o for o in plan_objects(plan) if o not in pushed}


def _pulled_any(boundaries: object) -> bool:
    """Whether a plan left a source with followers to be pulled at read time. Pure."""
    return isinstance(boundaries, dict) and (
        bool(boundaries.get("author_pull")) or bool(boundaries.get("pull"))
    )


def _audience(actor_id: int, sources: Sources, lo: int | None, hi: int | None) -> list[int]:
    """The users a batch visits: the sources' followers in (lo, hi], each once, in shard order
    (the actor, who may follow an object of their own activity, has it already)."""
    if sources.author_only:
        return follower_ids_in_range(followee_id=actor_id, lo=lo, hi=hi)
    users = audience_ids_in_range(
        author_id=actor_id if sources.author else None, objects=sources.objects, lo=lo, hi=hi
    )
    return [u for u in users if u != actor_id]


def _counters(actor_id: int, sources: Sources) -> list[str] | None:
    """The unfollow counters a batch checks after its writes (None: the author's alone)."""
    if sources.author_only:
        return None
    keys = [store.unfollows_key(actor_id)] if sources.author else []
    return keys + object_store.object_unfollow_counter_keys(sources.objects)


def _recipients(actor_id: int, followed: list[ObjectKey]) -> int:
    """Distinct users who follow the author or any of ``followed``, the actor not counted."""
    n = audience_count(author_id=actor_id, objects=followed)
    return n - (1 if followed_among(user_id=actor_id, objects=followed) else 0)


def job_for_old_message(*, activity_id: int, kind: str, actor_id: int | None = None) -> int | None:
    """The job of an activity's publish or remove, for messages of earlier versions that carry
    an activity id: written now if the hand-off did not (a publish whose activity is gone has
    nothing to deliver; a remove needs the actor's id). None: nothing to do."""
    job = Job.objects.filter(activity_id=activity_id, kind=kind).values_list("id", flat=True)
    if (job_id := job.first()) is not None:
        return job_id
    if kind == Job.Kind.PUBLISH:
        actor_id = (
            Activity.objects.filter(id=activity_id).values_list("actor_id", flat=True).first()
        )
    if actor_id is None:
        return None
    job_row, _ = Job.objects.get_or_create(
        activity_id=activity_id, kind=kind, defaults={"actor_id": actor_id}
    )
    return job_row.id


def _cache_and_timeline(activity: Activity, cap: int) -> None:
    store.set_bodies({activity.id: encode_body(activity_to_dict(activity))})
    if not store.add_to_timeline(activity.actor_id, [activity.id], cap):
        timelines_rebuild(author_ids=[activity.actor_id])  # first post, or lost: whole again
    store.add_to_feed(activity.actor_id, [activity.id], cap)  # authors see their own posts


def _object_timelines_add(
    activity_id: int, objects: list[ObjectKey], counts: dict[ObjectKey, int], cap: int
) -> None:
    """The activity into the timelines of the objects it is about: those that exist, and those
    of followed objects, rebuilt whole when missing (first activity, or lost); an object nobody
    follows keeps no timeline (its first follower's read or publish builds it)."""
    lost = [
        o
        for o in objects
        if not object_store.object_timeline_add(o, [activity_id], cap) and counts.get(o, 0) > 0
    ]
    if lost:
        object_timelines_rebuild(objects=lost)


def _uncache_and_untimeline(
    actor_id: int, activity_id: int, objects: list[ObjectKey] | None = None
) -> None:
    store.remove_from_timeline(actor_id, [activity_id])
    object_store.object_timelines_remove(objects or [], [activity_id])
    store.remove_from_feeds([actor_id], [activity_id])
    store.bury_body(activity_id)  # (the delete's commit did already, unless Redis failed it)


def _plan(job: FanoutJob) -> None:
    """Decide strategy and batches for a pending job, and do the author-side writes."""
    conf = get_conf()
    now = timezone.now()
    job.started_at = now
    if job.kind == Job.Kind.NOTIFY:
        activity = Activity.objects.select_related("actor").filter(id=job.activity_id).first()
        job.strategy = Job.Strategy.PUSH
        if activity is None:  # deleted before delivery began: its remove job cleans up
            job.state, job.finished_at = Job.State.DONE, now
            return
        store.set_bodies({activity.id: encode_body(activity_to_dict(activity))})
        fanout_replicate(bodies=[activity.id])
        job.boundaries = notifications.recipient_id_boundaries(
            activity_id=job.activity_id, batch_size=conf.fanout_batch_size
        )
        job.recipients = notifications.recipient_count(activity_id=job.activity_id)
        job.batches_total = len(job.boundaries) + 1
        job.state = Job.State.RUNNING
        return
    if job.kind == Job.Kind.PUBLISH:
        activity = Activity.objects.select_related("actor").filter(id=job.activity_id).first()
        if activity is None:  # deleted before its fan-out began: nothing to deliver
            job.strategy, job.state, job.finished_at = Job.Strategy.PUSH, Job.State.DONE, now
            return
        objects = about(
            activity.object_type, activity.object_id, activity.target_type, activity.target_id
        )
        counts = object_follower_counts(objects=objects)
        _cache_and_timeline(activity, conf.feed_max_length)
        _object_timelines_add(activity.id, objects, counts, conf.feed_max_length)
        # On a replica before the job runs (a retry of the plan writes them again): a failover
        # now loses neither the timeline that pull readers merge nor the body.
        fanout_replicate(
            feeds=[activity.actor_id],
            timelines=[activity.actor_id],
            objects=objects,
            bodies=[activity.id],
        )
        if not Activity.objects.filter(id=activity.id).exists():
            # Deleted while we cached it: its remove job may already have run, so undo here.
            _uncache_and_untimeline(job.actor_id, job.activity_id, objects)
            job.strategy, job.state, job.finished_at = Job.Strategy.PUSH, Job.State.DONE, now
            return
        followers = follower_count(user_id=job.actor_id)
        author_pull = author_skip = conf.is_pull_author(followers)
        followed = [o for o in objects if counts.get(o, 0) > 0]
        pushed = [o for o in followed if not conf.is_pull_author(counts[o])]
        store.announce(job.actor_id, job.activity_id)  # live streams (SSE) of followers
        # and of the objects' followers (a stream hearing several sources sends it once)
        store.announce_objects([object_source(*o) for o in followed], job.activity_id)
    else:
        objects = plan_objects(job.boundaries)
        _uncache_and_untimeline(job.actor_id, job.activity_id, objects)
        fanout_replicate(
            feeds=[job.actor_id],
            timelines=[job.actor_id],
            objects=objects,
            bodies=[job.activity_id],
        )
        notifications.notifications_withdraw(activity_id=job.activity_id)
        if not job.home:  # it went to no home feed: no follower to visit
            job.strategy, job.state, job.finished_at = Job.Strategy.PUSH, Job.State.DONE, now
            return
        followers = follower_count(user_id=job.actor_id)
        counts = object_follower_counts(objects=objects)
        followed = [o for o in objects if counts.get(o, 0) > 0]
        published = Job.objects.filter(activity_id=job.activity_id, kind=Job.Kind.PUBLISH).first()
        # A source pulled at publish is in no follower's feed by fan-out. But a feed rebuilt or
        # backfilled while that source was a push source since then holds it: the removal then
        # visits its followers, as it does while the source pushes now.
        author_pulled, objects_pulled = pulled_at_publish(published)
        author_pull = conf.is_pull_author(followers)
        author_skip = (
            author_pulled
            and author_pull
            and not store.went_push_since(job.actor_id, job.activity_id)
        )
        pushed = [
            o
            for o in followed
            if not (
                o in objects_pulled
                and conf.is_pull_author(counts[o])
                and not object_store.object_went_push_since(o, job.activity_id)
            )
        ]
    if not followed and (job.kind == Job.Kind.PUBLISH or not objects):
        # The author's followers alone (the earlier form of a job; a remove job keeps the plan
        # form, which names the objects: feeds.consistency reads them).
        job.recipients = followers
        if author_skip:
            # Followers merge the author's timeline at read time: no per-follower writes.
            job.strategy, job.state, job.finished_at = Job.Strategy.PULL, Job.State.DONE, now
            return
        job.strategy = Job.Strategy.PUSH
        job.boundaries = follower_id_boundaries(
            followee_id=job.actor_id, batch_size=conf.fanout_batch_size
        )
        job.batches_total = len(job.boundaries) + 1
        job.state = Job.State.RUNNING
        return
    author = followers > 0 and not author_skip
    plan: dict[str, Any] = {
        "b": [],
        "author": author,
        "author_pull": author_pull,
        "push": [list(o) for o in pushed],
        "pull": [list(o) for o in followed if o not in pushed],
        "objects": [list(o) for o in objects],
    }
    job.boundaries = plan
    if not author and not pushed:
        job.recipients = _recipients(job.actor_id, followed) if followed else followers
        job.strategy, job.state, job.finished_at = Job.Strategy.PULL, Job.State.DONE, now
        return
    job.strategy = Job.Strategy.PUSH
    plan["b"], visited = audience_plan(
        author_id=job.actor_id if author else None,
        objects=pushed,
        batch_size=conf.fanout_batch_size,
    )
    if pushed == followed and (author or followers == 0):
        # Every source is visited: the distinct recipients are the plan's count (one pass).
        recipients = visited
        if followed and followed_among(user_id=job.actor_id, objects=followed):
            recipients -= 1  # the actor, who follows an object of their own activity
    else:
        recipients = _recipients(job.actor_id, followed) if followed else followers
    job.recipients = recipients
    job.batches_total = len(plan["b"]) + 1
    job.state = Job.State.RUNNING


def fanout_start(*, job_id: int) -> list[BatchRef]:
    """Claim a job (pending -> running) and return the batches still to send.

    Run again on a running job (redelivery, sweeper) it returns only the batches not yet counted."""
    planned = False
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(id=job_id).first()
        if job is None or job.state in (Job.State.DONE, Job.State.FAILED):
            return []
        if job.state == Job.State.PENDING:
            _plan(job)
            job.save()
            planned = job.state == Job.State.DONE
            if planned:
                log.info("fanout job=%s activity=%s %s done", job.id, job.activity_id, job.strategy)
        counted = set(FanoutBatch.objects.filter(job_id=job.id).values_list("batch_no", flat=True))
    if planned:
        # Done at once (its sources all pulled): one that crossed to push meanwhile replans.
        return fanout_start(job_id=job_id) if job_replan_if_stale(job_id=job_id) else []
    return [
        BatchRef(job.id, n, lo, hi)
        for n, (lo, hi) in enumerate(batch_ranges(plan_boundaries(job.boundaries)))
        if n not in counted
    ]


def job_replan_if_stale(*, job_id: int) -> bool:
    """A publish job that finished without visiting the followers of a pulled source (author or
    object) that became a push source after the job was planned: its followers read that
    source's timeline no more, so the job goes back to pending (replanned, it visits them; its
    other followers are written again, idempotently). The repush of a source (author_repush,
    object_repush) resets the jobs that were done when it ran; this catches those that were
    still being planned or run then (called once a job is done). True when reset here."""
    row = (
        Job.objects.filter(id=job_id, kind=Job.Kind.PUBLISH, state=Job.State.DONE)
        .values("actor_id", "strategy", "boundaries", "started_at")
        .first()
    )
    if row is None or row["started_at"] is None:
        return False
    plan = row["boundaries"]
    planned_at = make_id(row["started_at"], low=0)
    if isinstance(plan, dict) and "b" in plan:
        author_pulled, pulled = bool(plan.get("author_pull")), _keys(plan.get("pull"))
    else:
        author_pulled, pulled = row["strategy"] == Job.Strategy.PULL, []
    moved = [at for at in object_store.objects_went_push_at(pulled) if at is not None]
    if author_pulled and (at := went_push_at(row["actor_id"])) is not None:
        moved.append(at)
    if not any(at >= planned_at for at in moved):
        return False
    return bool(_jobs_reset([job_id], started_at=row["started_at"]))


def delivered_too_often(*, deliveries: int, retries: int, limit: int) -> bool:
    """A poison batch: delivered more than ``limit`` times besides its own retries. Retries are
    the budget for transient failures (an outage of PostgreSQL or Redis) and are bounded by the
    task's max_retries; what this catches is a message that keeps coming back without retrying:
    one that kills the worker running it (redelivered after each crash). Pure."""
    return deliveries - retries > limit


def fanout_apply_batch(
    *,
    job_id: int,
    batch_no: int,
    lo: int | None,
    hi: int | None,
    replay: bool = False,
    retries: int = 0,
    send: Callable[[int], object] | None = None,
) -> list[int]:
    """Write (or remove) one activity for the followers in (lo, hi], then count the batch.
    ``retries``: how many times the task retried so far (Celery's request.retries). ``send``:
    how to enqueue the job again when, done, it went back to pending (job_replan_if_stale;
    None: the sweeper sends it). Returns the outbox rows of instant notification emails to
    send (a notify batch)."""
    done = FanoutBatch.objects.filter(job_id=job_id, batch_no=batch_no, state="done")
    job = (
        Job.objects.filter(id=job_id)
        .annotate(counted=Exists(done))
        .values("activity_id", "actor_id", "kind", "counted", "boundaries")
        .first()
    )
    if job is None or job["counted"]:
        return []  # gone, or a redelivered batch that already counted itself
    started = time.perf_counter()
    aid, actor_id = job["activity_id"], job["actor_id"]
    sources = plan_sources(job["boundaries"]) if job["kind"] != Job.Kind.NOTIFY else Sources()
    counters = _counters(actor_id, sources)
    deliveries, unfollows = store.begin_batch(job_id, batch_no, actor_id, counters)
    limit = settings.FEEDSITE_MAX_DELIVERIES
    if not replay and delivered_too_often(deliveries=deliveries, retries=retries, limit=limit):
        batch_mark_failed(
            job_id=job_id,
            batch_no=batch_no,
            lo=lo,
            hi=hi,
            error=f"poison: delivered more than {settings.FEEDSITE_MAX_DELIVERIES} times",
        )
        return []
    if job["kind"] == Job.Kind.NOTIFY:
        return _notify_batch(job_id, batch_no, aid, actor_id, lo, hi, started)
    followers = _audience(actor_id, sources, lo, hi)
    written = len(followers)
    if job["kind"] == Job.Kind.PUBLISH:
        written, unfollows_after, state = store.push_to_feeds(
            followers, [aid], get_conf().feed_max_length, actor_id, counters
        )
        # Check after write: a delete or unfollow that committed while we wrote has already run
        # (or skipped) its own purge, so take back what it could not see. A delete buries the
        # body (its tombstone) when it commits and again before its removal batches run, so a
        # live body still cached after our writes means those batches are still to come; a
        # tombstone means deleted; only without either do we ask PostgreSQL. (push_to_feeds
        # reads the body's first byte, which tells them apart, in its round trip.) An unfollow
        # of one source takes back only from those no source brings it to any more.
        if state == "deleted" or (
            state == "absent" and not Activity.objects.filter(id=aid).exists()
        ):
            store.remove_from_feeds(followers, [aid])
        elif unfollows_after != unfollows:
            still = set(_audience(actor_id, sources, lo, hi))
            store.remove_from_feeds([f for f in followers if f not in still], [aid])
    else:
        store.remove_from_feeds(followers, [aid])
    # Counted done only once its writes are on a replica: a master lost before fails the batch,
    # whose retry writes them again on the promoted replica (feeds.store.failover).
    fanout_replicate(feeds=followers)
    skipped = len(followers) - written  # owners of missing feeds: rebuilt when they next read
    batch_mark_done(job_id=job_id, batch_no=batch_no, delivered=written, skipped=skipped)
    if job["kind"] == Job.Kind.PUBLISH and _pulled_any(job["boundaries"]):
        if job_replan_if_stale(job_id=job_id) and send is not None:  # (once the job is done)
            send(job_id)
    store.observe(
        "batch_seconds",
        (time.perf_counter() - started) * 1000,
        {"deliveries": written, "skipped": skipped} if job["kind"] == Job.Kind.PUBLISH else None,
    )
    log.debug(
        "fanout job=%s activity=%s batch=%s delivered=%s skipped=%s",
        job_id,
        aid,
        batch_no,
        written,
        skipped,
    )
    return []


def _notify_batch(
    job_id: int, batch_no: int, aid: int, actor_id: int, lo: int | None, hi: int | None, started
) -> list[int]:
    """A batch of a notify job: the recipients in (lo, hi], then the same check after write as
    a publish (a delete that committed meanwhile withdrew what it could see)."""
    recipients = notifications.recipient_ids_in_range(activity_id=aid, lo=lo, hi=hi)
    written, instant = notifications.notifications_deliver(
        activity_id=aid, actor_id=actor_id, recipients=recipients
    )
    if not Activity.objects.filter(id=aid).exists():
        store.notifications_remove(recipients, [aid])
    fanout_replicate(notifications=recipients)  # on a replica before it counts (as above)
    skipped = len(recipients) - written  # feeds never built: built from PostgreSQL when read
    batch_mark_done(job_id=job_id, batch_no=batch_no, delivered=written, skipped=skipped)
    store.observe("batch_seconds", (time.perf_counter() - started) * 1000)
    return instant


def _insert_marker(
    job_id: int, batch_no: int, state: str, delivered: int, skipped: int = 0
) -> bool:
    """The atomic first-time marker: True only for the call that inserted (job, batch_no)."""
    table = FanoutBatch._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {table} (job_id, batch_no, state, delivered, skipped, finished_at) "  # noqa: S608 - table name from model meta
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (job_id, batch_no) DO NOTHING",
            [job_id, batch_no, state, delivered, skipped, timezone.now()],
        )
        return cur.rowcount == 1


def _count(job_id: int, *, done: int, failed: int, skipped: int = 0) -> None:
    """Move the counters and, when they add up, finish the job: one UPDATE, so the row lock
    makes exactly one batch the finisher (running -> done|failed, or failed -> done on replay)."""
    now = timezone.now()
    complete = Q(batches_total=F("batches_done") + done + F("batches_failed") + failed)
    clean = Q(batches_failed=-failed)  # no failed batch left after this change
    live = Q(state=Job.State.RUNNING)
    Job.objects.filter(id=job_id).update(
        batches_done=F("batches_done") + done,
        batches_failed=F("batches_failed") + failed,
        skipped=F("skipped") + skipped,
        state=Case(
            When(complete & clean & (live | Q(state=Job.State.FAILED)), then=Value(Job.State.DONE)),
            When(complete & live, then=Value(Job.State.FAILED)),
            default=F("state"),
        ),
        finished_at=Case(
            When(complete & (live | (clean & Q(state=Job.State.FAILED))), then=Value(now)),
            default=F("finished_at"),
        ),
        updated_at=now,
    )


def _relaxed_commit() -> None:
    """Bookkeeping commits without waiting for the WAL flush (PostgreSQL synchronous_commit off,
    this transaction only): one fsync per batch was most of a batch's wall time. A database crash
    can forget the last few hundred ms of markers, never half of one (marker and counters share
    the transaction); the sweeper then re-runs those batches, which are idempotent."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SET LOCAL synchronous_commit TO OFF")


def batch_mark_done(*, job_id: int, batch_no: int, delivered: int, skipped: int = 0) -> None:
    with transaction.atomic():
        _relaxed_commit()
        if _insert_marker(job_id, batch_no, FanoutBatch.State.DONE, delivered, skipped):
            _count(job_id, done=1, failed=0, skipped=skipped)
        elif FanoutBatch.objects.filter(job_id=job_id, batch_no=batch_no, state="failed").update(
            state="done", delivered=delivered, skipped=skipped
        ):
            _count(job_id, done=1, failed=-1, skipped=skipped)  # a dead letter replayed


def batch_mark_failed(
    *, job_id: int, batch_no: int, lo: int | None, hi: int | None, error: str
) -> None:
    """Final failure: a dead letter an operator can see and replay; the job ends failed."""
    with transaction.atomic():
        if not _insert_marker(job_id, batch_no, FanoutBatch.State.FAILED, 0):
            return  # already counted (done, or failed once)
        FanoutDeadLetter.objects.create(
            job_id=job_id, batch_no=batch_no, follower_lo=lo, follower_hi=hi, error=error[:2000]
        )
        _count(job_id, done=0, failed=1)
    store.count_stat("dead_letters")
    log.warning("fanout job=%s batch=%s dead-lettered: %s", job_id, batch_no, error[:200])


def dead_letter_replay(*, dead_letter_id: int) -> bool:
    """Run a dead-lettered batch again, in this process; True when it went through."""
    dl = FanoutDeadLetter.objects.filter(id=dead_letter_id, replayed_at__isnull=True).first()
    if dl is None:
        return False
    fanout_apply_batch(
        job_id=dl.job_id, batch_no=dl.batch_no, lo=dl.follower_lo, hi=dl.follower_hi, replay=True
    )
    FanoutDeadLetter.objects.filter(id=dl.id).update(replayed_at=timezone.now())
    return True


def dead_letters_replay(dead_letter_ids: Iterable[int]) -> tuple[int, list[tuple[int, str]]]:
    """Replay dead letters one by one (admin action, `manage.py replay_dead_letters`): the number
    that went through, and (id, error) for each that failed again and stays for another try."""
    done, failures = 0, []
    for dl_id in dead_letter_ids:
        try:
            done += dead_letter_replay(dead_letter_id=dl_id)
        except Exception as exc:  # noqa: BLE001 - report, keep the letter for another try
            failures.append((dl_id, f"{type(exc).__name__}: {exc}"))
    return done, failures


def _jobs_reset(job_ids: list[int], started_at: datetime | None = None) -> list[int]:
    """Done publish jobs back to pending (their fan-out runs again, planned anew); with
    ``started_at``, only a job still planned then (a second reset of the same run is a no-op).
    Returns the ids reset."""
    if not job_ids:
        return []
    with transaction.atomic():
        jobs = Job.objects.filter(id__in=job_ids, kind=Job.Kind.PUBLISH, state=Job.State.DONE)
        if started_at is not None:
            jobs = jobs.filter(started_at=started_at)
        ids = list(jobs.select_for_update().values_list("id", flat=True))
        FanoutBatch.objects.filter(job_id__in=ids).delete()
        Job.objects.filter(id__in=ids).update(
            state=Job.State.PENDING,
            strategy=Job.Strategy.UNDECIDED,
            batches_total=0,
            batches_done=0,
            batches_failed=0,
            skipped=0,
            boundaries=[],
            started_at=None,
            finished_at=None,
            updated_at=timezone.now(),
        )
    return ids


def author_repush(*, author_id: int) -> list[int]:
    """An author went from pull to push (lost followers, or the threshold was raised): their
    recent activities, read by followers from the timeline until now, must be in the followers'
    feeds. Their publish jobs that left the author's followers out start again (pending);
    planning now chooses push. Returns job ids."""
    # Recorded first: a delete of one of their pull-published activities from now on visits
    # the followers' feeds (a rebuild may put it there while they are a push author), and a job
    # still running now replans when it is done (job_replan_if_stale).
    store.mark_went_push(author_id, make_id(timezone.now()))
    recent = recent_activity_ids(actor_id=author_id, limit=get_conf().feed_max_length)
    jobs = Job.objects.filter(activity_id__in=recent, kind=Job.Kind.PUBLISH, state=Job.State.DONE)
    ids = _jobs_reset(
        [
            job_id
            for job_id, strategy, plan in jobs.values_list("id", "strategy", "boundaries")
            if pulled_at_publish(Job(strategy=strategy, boundaries=plan))[0]
        ]
    )
    if ids:
        log.info("author=%s moved to push: %d activities fanned out again", author_id, len(ids))
    return ids


def object_repush(*, obj: ObjectKey, conf: FeedConf | None = None) -> list[int]:
    """An object went from pull to push (lost followers, or the threshold was raised): its
    recent activities (as object or target), read by its followers from its timeline until
    now, must be in their feeds: the publish jobs that did not visit its followers start again
    (pending). Returns job ids."""
    conf = conf or get_conf()
    object_store.mark_objects_went_push([obj], make_id(timezone.now()))  # first, as above
    recent = object_activity_ids(
        object_type=obj[0], object_id=obj[1], before_id=None, limit=conf.feed_max_length
    )
    jobs = Job.objects.filter(activity_id__in=recent, kind=Job.Kind.PUBLISH, state=Job.State.DONE)
    ids = _jobs_reset(
        [
            job_id
            for job_id, plan in jobs.values_list("id", "boundaries")
            if obj not in plan_sources(plan).objects
        ]
    )
    if ids:
        log.info("object=%s:%s moved to push: %d activities fanned out again", *obj, len(ids))
    return ids


def authors_moved_to_push(*, old_threshold: int, new_threshold: int) -> list[int]:
    """Authors whose follower count lies in [old, new) after the threshold was raised."""
    if new_threshold <= old_threshold:
        return []  # push -> pull: what was pushed stays, reads deduplicate
    return user_ids_with_followers_in(lo=old_threshold, hi=new_threshold)


def objects_moved_to_push(*, old_threshold: int, new_threshold: int) -> list[ObjectKey]:
    """Objects whose follower count lies in [old, new) after the threshold was raised."""
    if new_threshold <= old_threshold:
        return []
    return objects_with_followers_in(lo=old_threshold, hi=new_threshold)


def sweep_stalled_jobs(*, limit: int = 500, running: bool = True) -> list[int]:
    """Jobs left pending (crash or broker error between commit and enqueue) or stalled; the caller
    re-enqueues `fanout_start` for each. Two sweepers skip each other's rows (SKIP LOCKED)."""
    now = timezone.now()
    pending_cutoff = now - timedelta(seconds=settings.FEEDSITE_SWEEP_PENDING_SECONDS)
    stalled_cutoff = now - timedelta(seconds=settings.FEEDSITE_SWEEP_STALLED_SECONDS)
    skip_locked = connection.features.has_select_for_update_skip_locked
    with transaction.atomic():
        ids = list(
            Job.objects.select_for_update(skip_locked=skip_locked)
            .filter(
                Q(state=Job.State.PENDING, updated_at__lt=pending_cutoff)
                | (Q(state=Job.State.RUNNING, updated_at__lt=stalled_cutoff) if running else Q())
            )
            .order_by("id")
            .values_list("id", flat=True)[:limit]
        )
        # Touch them, so the next sweep waits a full period before trying again.
        Job.objects.filter(id__in=ids).update(updated_at=now)
    if ids:
        log.warning("sweeper re-enqueues %d fan-out jobs: %s", len(ids), ids[:20])
    return ids


def prune_finished_jobs(*, older_than_days: int, chunk: int = 1000) -> int:
    """Delete jobs that finished cleanly (done) more than ``older_than_days`` ago, with their
    batch markers, in chunks (short transactions). Failed jobs and their dead letters stay for
    an operator. Returns how many jobs went."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    pruned = 0
    while True:
        ids = list(
            Job.objects.filter(state=Job.State.DONE, finished_at__lt=cutoff)
            .order_by("id")
            .values_list("id", flat=True)[:chunk]
        )
        if not ids:
            return pruned
        with transaction.atomic():
            FanoutBatch.objects.filter(job_id__in=ids).delete()
            Job.objects.filter(id__in=ids).delete()
        pruned += len(ids)
