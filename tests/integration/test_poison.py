"""A batch is poison when it keeps coming back without retrying (it kills the worker running
it), not when it retries through an outage: retries have their own budget (max_retries)."""

from __future__ import annotations

import pytest

from activities.models import Activity
from feeds import fanout, store
from feeds.models import FanoutDeadLetter, FanoutJob
from follows.models import Follow
from tests.conftest import activate
from tests.factories import UserFactory

STAR = {"verb": "starred", "object_type": "project", "object_id": "p-1"}


@pytest.fixture
def batch(db, settings):
    """A running push job with one batch for one follower, and the follower: (activity, job, fan)."""
    settings.FEEDSITE_MAX_DELIVERIES = 5
    author, fan = UserFactory(), UserFactory()
    activate(fan)
    Follow.objects.create(follower=fan, followee=author)
    activity = Activity.objects.create(actor=author, **STAR)  # its receiver writes the job
    job = FanoutJob.objects.get(activity_id=activity.id, kind=FanoutJob.Kind.PUBLISH)
    FanoutJob.objects.filter(id=job.id).update(state="running", strategy="push", batches_total=1)
    return activity, job, fan


def test_a_batch_retrying_through_an_outage_is_not_poison(batch):
    activity, job, fan = batch
    # Six runs so far, each ended by a transient error and retried: this is the seventh.
    store.client().set(store.deliveries_key(job.id, 0), 6)
    fanout.fanout_apply_batch(job_id=job.id, batch_no=0, lo=None, hi=None, retries=6)
    assert activity.id in store.feed_ids(fan.pk)
    assert not FanoutDeadLetter.objects.exists()
    assert FanoutJob.objects.get(id=job.id).state == "done"


def test_a_batch_redelivered_without_retrying_is_poison(batch):
    activity, job, fan = batch
    store.client().set(store.deliveries_key(job.id, 0), 5)  # five crashed runs, no retry
    fanout.fanout_apply_batch(job_id=job.id, batch_no=0, lo=None, hi=None, retries=0)
    assert activity.id not in store.feed_ids(fan.pk)
    assert FanoutDeadLetter.objects.get(job_id=job.id).error.startswith("poison")
    assert FanoutJob.objects.get(id=job.id).state == "failed"


@pytest.mark.django_db
def test_finished_jobs_are_pruned_after_the_retention_period_and_failed_ones_stay():
    from datetime import timedelta

    from django.utils import timezone

    from feeds.models import FanoutBatch

    author = UserFactory()
    old, recent, failed = (Activity.objects.create(actor=author, **STAR) for _ in range(3))
    long_ago = timezone.now() - timedelta(days=20)
    jobs = {a.id: FanoutJob.objects.get(activity_id=a.id) for a in (old, recent, failed)}
    FanoutJob.objects.filter(id=jobs[old.id].id).update(state="done", finished_at=long_ago)
    FanoutJob.objects.filter(id=jobs[recent.id].id).update(state="done", finished_at=timezone.now())
    FanoutJob.objects.filter(id=jobs[failed.id].id).update(state="failed", finished_at=long_ago)
    FanoutBatch.objects.create(job_id=jobs[old.id].id, batch_no=0, state="done")
    assert fanout.prune_finished_jobs(older_than_days=14, chunk=1) == 1
    left = set(FanoutJob.objects.values_list("activity_id", flat=True))
    assert left == {recent.id, failed.id}
    assert not FanoutBatch.objects.filter(job_id=jobs[old.id].id).exists()
