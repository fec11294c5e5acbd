"""Thin Celery tasks: ids in, one service call. Task names are a wire format: never rename."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerError

from feedsite import queues

from . import fanout, notifications, store
from .store import TRANSIENT_ERRORS
from .store.failover import failover_wait

log = logging.getLogger("feeds.tasks")
RETRYABLE = (
    *TRANSIENT_ERRORS,
    OperationalError,
    InterfaceError,
    BrokerError,  # sending a job's batches: retried, not left running
    ConnectionError,
    TimeoutError,
)
RETRY = {
    "autoretry_for": RETRYABLE,
    "retry_backoff": True,
    "retry_backoff_max": settings.FEEDSITE_FANOUT_BACKOFF_MAX,
    "retry_jitter": True,
    "max_retries": settings.FEEDSITE_FANOUT_MAX_RETRIES,
}


def enqueue_batches(batches: list[fanout.BatchRef]) -> None:
    if not batches:
        return
    with fanout_batch_task.app.producer_or_acquire() as producer:  # one connection for all
        for b in batches:
            fanout_batch_task.apply_async((b.job_id, b.batch_no, b.lo, b.hi), producer=producer)


@shared_task(name="feeds.fanout_start", soft_time_limit=280, time_limit=300, **RETRY)
def fanout_start_task(job_id: int) -> None:
    """The one entry task of every fan-out job, publish or remove (feeds.services hands off the
    job id; the sweeper and a repush re-enqueue it)."""
    with failover_wait(time_limit=280):  # a master lost: its retry waits for the promotion
        batches = fanout.fanout_start(job_id=job_id)
    enqueue_batches(batches)


# Aliases: task names that messages queued by earlier versions may still carry (they enqueued
# an activity id, not a job id). Kept registered so an upgrade drops nothing that was accepted.
@shared_task(name="feeds.fanout_publish", soft_time_limit=280, time_limit=300, **RETRY)
def fanout_publish_task(activity_id: int) -> None:
    job_id = fanout.job_for_old_message(activity_id=activity_id, kind=fanout.Job.Kind.PUBLISH)
    if job_id is not None:
        enqueue_batches(fanout.fanout_start(job_id=job_id))


@shared_task(name="feeds.fanout_remove", soft_time_limit=280, time_limit=300, **RETRY)
def fanout_remove_task(activity_id: int, actor_id: int) -> None:
    job_id = fanout.job_for_old_message(
        activity_id=activity_id, kind=fanout.Job.Kind.REMOVE, actor_id=actor_id
    )
    if job_id is not None:
        enqueue_batches(fanout.fanout_start(job_id=job_id))


class BatchTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        job_id, batch_no, lo, hi = args
        fanout.batch_mark_failed(
            job_id=job_id, batch_no=batch_no, lo=lo, hi=hi, error=f"{type(exc).__name__}: {exc}"
        )


@shared_task(
    name="feeds.fanout_batch", base=BatchTask, bind=True, soft_time_limit=50, time_limit=60, **RETRY
)
def fanout_batch_task(self, job_id: int, batch_no: int, lo: int | None, hi: int | None) -> None:
    with failover_wait(time_limit=50):  # a master lost: its retry waits for the promotion
        instant = fanout.fanout_apply_batch(
            job_id=job_id,
            batch_no=batch_no,
            lo=lo,
            hi=hi,
            retries=self.request.retries or 0,
            send=fanout_start_task.delay,  # a job that replans (a pulled source went push)
        )
    for row_id in instant:  # (a broker error here: the email sweep sends them within minutes)
        notification_email_task.delay(row_id)


def queue_depths() -> dict[str, int]:
    """Messages waiting in each of the project's queues (0 for one not declared yet)."""
    depths = {}
    with fanout_start_task.app.connection_for_write() as conn:
        for queue in queues.ALL:
            try:
                depths[queue] = conn.default_channel.queue_declare(
                    queue, passive=True
                ).message_count
            except Exception:  # noqa: BLE001 - not declared yet: empty
                depths[queue] = 0
                conn.close()
                conn.connect()
    return depths


@shared_task(name="feeds.sweep_stalled_jobs", soft_time_limit=50, time_limit=60)
def sweep_stalled_jobs_task() -> None:
    backlog = queue_depths()[queues.FANOUT] > settings.FEEDSITE_SWEEP_MAX_QUEUE
    for job_id in fanout.sweep_stalled_jobs(running=not backlog):
        fanout_start_task.delay(job_id)


@shared_task(name="feeds.author_to_push", soft_time_limit=280, time_limit=300, **RETRY)
def author_to_push_task(author_id: int) -> None:
    """(Kept for messages queued by earlier versions and for threshold_changed.)"""
    for job_id in fanout.author_repush(author_id=author_id):
        fanout_start_task.delay(job_id)


@shared_task(name="feeds.object_to_push", soft_time_limit=280, time_limit=300, **RETRY)
def object_to_push_task(object_type: str, object_id: str) -> None:
    """An object below the threshold now (threshold_changed): its recent activities pushed."""
    for job_id in fanout.object_repush(obj=(object_type, object_id)):
        fanout_start_task.delay(job_id)


@shared_task(name="feeds.threshold_changed", soft_time_limit=280, time_limit=300, **RETRY)
def threshold_changed_task(old_threshold: int, new_threshold: int) -> None:
    for author_id in fanout.authors_moved_to_push(
        old_threshold=old_threshold, new_threshold=new_threshold
    ):
        author_to_push_task.delay(author_id)
    for object_type, object_id in fanout.objects_moved_to_push(
        old_threshold=old_threshold, new_threshold=new_threshold
    ):
        object_to_push_task.delay(object_type, object_id)


@shared_task(name="feeds.backfill_users", soft_time_limit=1700, time_limit=1800, **RETRY)
def backfill_users_task(lo: int, hi: int, since: str | None, run_id: str) -> None:
    from datetime import datetime

    from . import rebuild

    result = rebuild.users_rebuild(
        user_ids=rebuild.user_ids_in_range(lo=lo, hi=hi),
        since=datetime.fromisoformat(since) if since else None,
    )
    rebuild.backfill_progress(run_id, result)


@shared_task(name="feeds.backfill_objects", soft_time_limit=1700, time_limit=1800, **RETRY)
def backfill_objects_task(lo: int, hi: int, run_id: str) -> None:
    """The timelines of the followed objects whose counter row id lies in (lo, hi]."""
    from . import rebuild

    objects = rebuild.object_ids_in_range(lo=lo, hi=hi)
    entries = rebuild.object_timelines_rebuild(objects=objects)
    rebuild.backfill_progress(run_id, rebuild.RebuildResult(entries=entries), len(objects))


@shared_task(name="feeds.feeds_forget_ids", soft_time_limit=50, time_limit=60, **RETRY)
def feeds_forget_ids_task(user_ids: list[int], activity_ids: list[int]) -> None:
    """Take activities out of the given feeds (the followers of a deleted user)."""
    store.remove_from_feeds(user_ids, activity_ids)


@shared_task(name="feeds.prune_finished_jobs", soft_time_limit=280, time_limit=300)
def prune_finished_jobs_task() -> None:
    fanout.prune_finished_jobs(older_than_days=settings.FEEDSITE_JOB_RETENTION_DAYS)


# Email: a mail server that refuses or times out is retried with backoff for about a day; the
# outbox row stays pending meanwhile, and the email sweep picks up what is still owed.
EMAIL_ERRORS: tuple[type[BaseException], ...] = (*RETRYABLE, OSError)  # smtplib's are OSErrors
EMAIL_RETRY = {
    "autoretry_for": EMAIL_ERRORS,
    "retry_backoff": 30,
    "retry_backoff_max": 3600,
    "retry_jitter": True,
    "max_retries": 30,
}


@shared_task(name="feeds.notification_email", soft_time_limit=60, time_limit=90, **EMAIL_RETRY)
def notification_email_task(row_id: int) -> None:
    """One instant notification email (an outbox row)."""
    notifications.email_send(row_ids=[row_id])


@shared_task(name="feeds.send_due_emails", soft_time_limit=280, time_limit=300)
def send_due_emails_task() -> None:
    """Every minute (beat): digests whose period passed, instant emails left pending. One
    recipient's failure leaves their rows pending for the next sweep, not the others'."""
    for row_ids in notifications.emails_due():
        try:
            notifications.email_send(row_ids=row_ids)
        except EMAIL_ERRORS:
            log.warning("notification email failed, left pending: rows=%s", row_ids[:10])
