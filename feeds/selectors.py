from __future__ import annotations

from typing import Any

from .models import FanoutJob


def fanout_status(*, activity_id: int) -> dict[str, Any]:
    """The publish job's progress; an activity saved but not yet picked up reads as pending."""
    job = FanoutJob.objects.filter(activity_id=activity_id, kind=FanoutJob.Kind.PUBLISH).first()
    if job is None:
        job = FanoutJob(activity_id=activity_id)
    return {
        "state": job.state,
        "strategy": job.strategy,
        "recipients": job.recipients,
        "skipped": job.skipped,
        "batches_total": job.batches_total,
        "batches_done": job.batches_done,
        "batches_failed": job.batches_failed,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def removals_pending(*, actor_id: int) -> list[int]:
    """Ids of the actor's deleted activities whose removal fan-out has not finished: gone from
    PostgreSQL, maybe still in feeds. An unfollow's purge takes these out too (the removal,
    when it runs, no longer sees the unfollower among the followers)."""
    return list(
        FanoutJob.objects.filter(actor_id=actor_id, kind=FanoutJob.Kind.REMOVE)
        .exclude(state=FanoutJob.State.DONE)
        .values_list("activity_id", flat=True)
    )
