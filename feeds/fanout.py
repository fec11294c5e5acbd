"""Fan-out: plan, start, apply a batch, and the fan-in bookkeeping.

Every step is safe to run twice (at-least-once delivery): ZADD/ZREM are idempotent, a batch counts
itself once through a unique (job, batch_no) marker, and a job leaves `running` through one
conditional UPDATE that exactly one finisher wins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from activities.models import Activity
from activities.selectors import activity_to_dict, encode_body
from follows.selectors import (
    batch_ranges,
    follower_count,
    follower_id_boundaries,
    follower_ids_in_range,
)

from . import store
from .conf import get_conf
from .models import FanoutBatch, FanoutDeadLetter, FanoutJob

log = logging.getLogger("feeds.fanout")
Job = FanoutJob


@dataclass(frozen=True)
class BatchRef:
    job_id: int
    batch_no: int
    lo: int | None
    hi: int | None


def job_for_publish(*, activity_id: int) -> int | None:
    """The publish job of an activity (created here for ORM/admin saves); None if it is gone."""
    actor_id = Activity.objects.filter(id=activity_id).values_list("actor_id", flat=True).first()
    if actor_id is None:
        return (
            Job.objects.filter(activity_id=activity_id, kind=Job.Kind.PUBLISH)
            .values_list("id", flat=True)
            .first()
        )
    job, _ = Job.objects.get_or_create(
        activity_id=activity_id, kind=Job.Kind.PUBLISH, defaults={"actor_id": actor_id}
    )
    return job.id


def job_for_remove(*, activity_id: int, actor_id: int) -> int:
    job, _ = Job.objects.get_or_create(
        activity_id=activity_id, kind=Job.Kind.REMOVE, defaults={"actor_id": actor_id}
    )
    return job.id


def _cache_and_timeline(activity: Activity, cap: int) -> None:
    store.set_bodies({activity.id: encode_body(activity_to_dict(activity))})
    store.add_to_timeline(activity.actor_id, activity.id, cap)
    store.add_to_feed(activity.actor_id, [activity.id], cap)  # authors see their own posts


def _plan(job: FanoutJob) -> None:
    """Decide strategy and batches for a pending job, and do the author-side writes."""
    conf = get_conf()
    now = timezone.now()
    job.started_at = now
    if job.kind == Job.Kind.PUBLISH:
        activity = Activity.objects.select_related("actor").filter(id=job.activity_id).first()
        if activity is None:  # deleted before its fan-out began: nothing to deliver
            job.strategy, job.state, job.finished_at = Job.Strategy.PUSH, Job.State.DONE, now
            return
        _cache_and_timeline(activity, conf.feed_max_length)
        recipients = follower_count(user_id=job.actor_id)
        pull = recipients >= conf.celebrity_threshold
    else:
        store.remove_from_timeline(job.actor_id, job.activity_id)
        store.remove_from_feeds([job.actor_id], [job.activity_id])
        store.delete_body(job.activity_id)
        recipients = follower_count(user_id=job.actor_id)
        published = Job.objects.filter(activity_id=job.activity_id, kind=Job.Kind.PUBLISH).first()
        pull = published is not None and published.strategy == Job.Strategy.PULL
    job.recipients = recipients
    if pull:
        # Followers merge the author's timeline at read time: no per-follower writes.
        job.strategy, job.state, job.finished_at = Job.Strategy.PULL, Job.State.DONE, now
        return
    job.strategy = Job.Strategy.PUSH
    job.boundaries = follower_id_boundaries(
        followee_id=job.actor_id, batch_size=conf.fanout_batch_size
    )
    job.batches_total = len(job.boundaries) + 1
    job.state = Job.State.RUNNING


def fanout_start(*, job_id: int) -> list[BatchRef]:
    """Claim a job (pending -> running) and return the batches still to send.

    Run again on a running job (redelivery, sweeper) it returns only the batches not yet counted."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(id=job_id).first()
        if job is None or job.state in (Job.State.DONE, Job.State.FAILED):
            return []
        if job.state == Job.State.PENDING:
            _plan(job)
            job.save()
            if job.state == Job.State.DONE:
                log.info("fanout job=%s activity=%s %s done", job.id, job.activity_id, job.strategy)
                return []
        counted = set(FanoutBatch.objects.filter(job_id=job.id).values_list("batch_no", flat=True))
    return [
        BatchRef(job.id, n, lo, hi)
        for n, (lo, hi) in enumerate(batch_ranges(job.boundaries))
        if n not in counted
    ]


def fanout_apply_batch(
    *, job_id: int, batch_no: int, lo: int | None, hi: int | None, replay: bool = False
) -> None:
    """Write (or remove) one activity for the followers in (lo, hi], then count the batch."""
    job = Job.objects.filter(id=job_id).values("activity_id", "actor_id", "kind").first()
    if job is None:
        return
    if FanoutBatch.objects.filter(job_id=job_id, batch_no=batch_no, state="done").exists():
        return  # a redelivered batch that already counted itself
    if not replay and store.count_delivery(job_id, batch_no) > settings.FEEDSITE_MAX_DELIVERIES:
        batch_mark_failed(
            job_id=job_id,
            batch_no=batch_no,
            lo=lo,
            hi=hi,
            error=f"poison: delivered more than {settings.FEEDSITE_MAX_DELIVERIES} times",
        )
        return
    aid, actor_id = job["activity_id"], job["actor_id"]
    followers = follower_ids_in_range(followee_id=actor_id, lo=lo, hi=hi)
    if job["kind"] == Job.Kind.PUBLISH:
        store.push_to_feeds(followers, aid, get_conf().feed_max_length)
        # Check after write: a delete or unfollow that committed while we wrote has already run
        # (or skipped) its own purge, so take back what it could not see.
        if not Activity.objects.filter(id=aid).exists():
            store.remove_from_feeds(followers, [aid])
        else:
            still = set(follower_ids_in_range(followee_id=actor_id, lo=lo, hi=hi))
            store.remove_from_feeds([f for f in followers if f not in still], [aid])
    else:
        store.remove_from_feeds(followers, [aid])
    batch_mark_done(job_id=job_id, batch_no=batch_no, delivered=len(followers))


def _now_fields() -> dict:
    return {"updated_at": timezone.now()}


def _finish(job_id: int) -> None:
    """running -> done|failed (or failed -> done after replay); exactly one caller wins."""
    won = (
        Job.objects.filter(id=job_id, batches_total=F("batches_done") + F("batches_failed"))
        .filter(Q(state=Job.State.RUNNING) | Q(state=Job.State.FAILED, batches_failed=0))
        .update(
            state=Case(
                When(batches_failed=0, then=Value(Job.State.DONE)), default=Value(Job.State.FAILED)
            ),
            finished_at=timezone.now(),
            **_now_fields(),
        )
    )
    if won:
        log.info("fanout job=%s finished", job_id)


def batch_mark_done(*, job_id: int, batch_no: int, delivered: int) -> None:
    with transaction.atomic():
        try:
            with transaction.atomic():
                FanoutBatch.objects.create(
                    job_id=job_id, batch_no=batch_no, state="done", delivered=delivered
                )
            delta = {"batches_done": F("batches_done") + 1}
        except IntegrityError:
            # Counted before: only a failed batch that now succeeded (replay) changes anything.
            if not FanoutBatch.objects.filter(
                job_id=job_id, batch_no=batch_no, state="failed"
            ).update(state="done", delivered=delivered):
                return
            delta = {
                "batches_done": F("batches_done") + 1,
                "batches_failed": F("batches_failed") - 1,
            }
        Job.objects.filter(id=job_id).update(**delta, **_now_fields())
        _finish(job_id)


def batch_mark_failed(
    *, job_id: int, batch_no: int, lo: int | None, hi: int | None, error: str
) -> None:
    """Final failure: a dead letter an operator can see and replay; the job ends failed."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                FanoutBatch.objects.create(job_id=job_id, batch_no=batch_no, state="failed")
        except IntegrityError:
            return  # already counted (done, or failed once)
        FanoutDeadLetter.objects.create(
            job_id=job_id, batch_no=batch_no, follower_lo=lo, follower_hi=hi, error=error[:2000]
        )
        Job.objects.filter(id=job_id).update(
            batches_failed=F("batches_failed") + 1, **_now_fields()
        )
        _finish(job_id)
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


def sweep_stalled_jobs(*, limit: int = 500) -> list[int]:
    """Jobs left pending (crash or broker error between commit and enqueue) or stalled; the caller
    re-enqueues `fanout_start` for each. Two sweepers skip each other's rows (SKIP LOCKED)."""
    now = timezone.now()
    pending_cutoff = now - timedelta(seconds=settings.FEEDSITE_SWEEP_PENDING_SECONDS)
    stalled_cutoff = now - timedelta(seconds=settings.FEEDSITE_SWEEP_STALLED_SECONDS)
    lock = {"skip_locked": True} if connection.features.has_select_for_update_skip_locked else {}
    with transaction.atomic():
        ids = list(
            Job.objects.select_for_update(**lock)
            .filter(
                Q(state=Job.State.PENDING, updated_at__lt=pending_cutoff)
                | Q(state=Job.State.RUNNING, updated_at__lt=stalled_cutoff)
            )
            .order_by("id")
            .values_list("id", flat=True)[:limit]
        )
        # Touch them, so the next sweep waits a full period before trying again.
        Job.objects.filter(id__in=ids).update(updated_at=now)
    if ids:
        log.warning("sweeper re-enqueues %d fan-out jobs: %s", len(ids), ids[:20])
    return ids
