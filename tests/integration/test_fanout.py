"""Fan-out through a real Celery worker process, on real PostgreSQL/SQLite and Redis."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from activities.models import Activity
from activities.services import activity_publish
from feeds import fanout, store
from feeds.models import FanoutDeadLetter, FanoutJob
from feeds.services import feed_settings_update
from follows.services import follow_create, follow_delete
from tests.conftest import activate, auth_client, wait_until
from tests.factories import UserFactory

pytestmark = pytest.mark.worker
STAR = {"verb": "starred", "object_type": "project", "object_id": "p-1"}


def publish(user, **extra) -> Activity:
    res = auth_client(user).post("/api/activities/", {**STAR, **extra}, format="json")
    assert res.status_code == 201, res.content
    return Activity.objects.get(id=int(res.json()["id"]))


def job_of(activity_id: int, kind: str = "publish") -> FanoutJob | None:
    return FanoutJob.objects.filter(activity_id=activity_id, kind=kind).first()


def wait_job(activity_id: int, kind: str = "publish", states=("done",)) -> FanoutJob:
    return wait_until(
        lambda: (j := job_of(activity_id, kind)) and j.state in states and j, timeout=30
    )


def author_with_followers(n: int):
    author = UserFactory()
    fans = [UserFactory() for _ in range(n)]
    activate(author, *fans)
    for fan in fans:
        follow_create(follower_id=fan.pk, followee_id=author.pk)
    return author, fans


def feeds_snapshot(user_ids) -> str:
    digest = hashlib.sha256()
    for uid in sorted(user_ids):
        digest.update(
            repr((uid, store.client().zrange(store.feed_key(uid), 0, -1, withscores=True))).encode()
        )
    return digest.hexdigest()


def test_push_fanout_reaches_every_follower_once_in_several_batches(live_worker):
    feed_settings_update(fanout_batch_size=3, celebrity_threshold=100)
    author, fans = author_with_followers(7)
    activity = publish(author)
    job = wait_job(activity.id)
    assert job.strategy == "push" and job.recipients == 7
    assert job.batches_total == 3 and job.batches_done == 3 and job.batches_failed == 0
    assert job.started_at and job.finished_at
    for fan in fans:
        assert store.feed_ids(fan.pk) == [activity.id]
    assert store.feed_ids(author.pk) == [activity.id]  # authors see their own posts
    assert store.timeline_ids(author.pk) == [activity.id]
    assert store.get_bodies([activity.id])  # body stored once
    status = auth_client(author).get(f"/api/activities/{activity.id}/fanout/").json()
    assert status == {
        "state": "done",
        "strategy": "push",
        "recipients": 7,
        "skipped": 0,
        "batches_total": 3,
        "batches_done": 3,
        "batches_failed": 0,
        "started_at": status["started_at"],
        "finished_at": status["finished_at"],
    }


def test_pull_author_writes_no_follower_feed(live_worker):
    feed_settings_update(celebrity_threshold=3, fanout_batch_size=2)
    star, fans = author_with_followers(4)
    small, small_fans = author_with_followers(2)
    celebrity_post, normal_post = publish(star), publish(small)
    assert wait_job(celebrity_post.id).strategy == "pull"
    assert wait_job(normal_post.id).strategy == "push"
    assert job_of(celebrity_post.id).batches_total == 0
    assert store.timeline_ids(star.pk) == [celebrity_post.id]
    for fan in fans:
        assert celebrity_post.id not in store.feed_ids(fan.pk)
    for fan in small_fans:
        assert store.feed_ids(fan.pk) == [normal_post.id]


def test_feeds_are_capped_at_feed_max_length(live_worker):
    feed_settings_update(feed_max_length=10, fanout_batch_size=3)
    author, fans = author_with_followers(2)
    posted = [publish(author, object_id=f"p{i}") for i in range(12)]
    for a in posted:
        wait_job(a.id)
    newest_ten = sorted((a.id for a in posted), reverse=True)[:10]
    for fan in fans:
        assert store.feed_ids(fan.pk) == newest_ten
    assert store.timeline_ids(author.pk) == newest_ten


def test_failed_batch_becomes_a_dead_letter_and_replay_completes_the_feeds(live_worker):
    feed_settings_update(fanout_batch_size=2)
    author, fans = author_with_followers(5)
    # A real store fault: one follower's feed key holds the wrong type, so ZADD fails (WRONGTYPE).
    store.client().set(store.feed_key(fans[2].pk), "not a sorted set")
    activity = publish(author)
    job = wait_job(activity.id, states=("failed",))
    assert job.batches_failed == 1 and job.batches_done == job.batches_total - 1
    letter = FanoutDeadLetter.objects.get(job=job)
    assert "WRONGTYPE" in letter.error and letter.replayed_at is None

    # It was retried with backoff (FEEDSITE_FANOUT_MAX_RETRIES=2 in tests) before it was parked.
    # (The worker's traceback naming WRONGTYPE may land in its log a moment after the job's
    # state: on a cluster the dead-letter line's message is cut before it.)
    def log_naming_the_error() -> str:
        text = live_worker.log_path.read_text()
        return text if "WRONGTYPE" in text else ""

    log = wait_until(log_naming_the_error, timeout=10)
    assert log.count("Retry in") >= 2
    # The operator repairs the key (an empty built feed, without the activity), then replays.
    store.client().delete(store.feed_key(fans[2].pk))
    store.write_feed(fans[2].pk, [], 500, 0)
    call_command("replay_dead_letters")
    job.refresh_from_db()
    assert (job.state, job.batches_done, job.batches_failed) == ("done", job.batches_total, 0)
    for fan in fans:
        assert store.feed_ids(fan.pk) == [activity.id]
    letter.refresh_from_db()
    assert letter.replayed_at is not None


def test_running_every_batch_twice_changes_nothing(live_worker):
    feed_settings_update(fanout_batch_size=3)
    author, fans = author_with_followers(8)
    activity = publish(author)
    job = wait_job(activity.id)
    before = feeds_snapshot([f.pk for f in fans])
    counters = (job.batches_done, job.batches_failed, job.state)
    # In this process, in reverse order, and again through the worker (a redelivery).
    from feeds.tasks import fanout_batch_task
    from follows.selectors import batch_ranges

    ranges = list(enumerate(batch_ranges(job.boundaries)))
    for n, (lo, hi) in reversed(ranges):
        fanout.fanout_apply_batch(job_id=job.id, batch_no=n, lo=lo, hi=hi)
    for n, (lo, hi) in ranges:
        fanout_batch_task.delay(job.id, n, lo, hi)
    fanout_batch_task.delay(job.id, 0, *ranges[0][1])
    wait_until(lambda: "succeeded" in live_worker.log_path.read_text())
    import time

    time.sleep(1.0)
    job.refresh_from_db()
    assert feeds_snapshot([f.pk for f in fans]) == before
    assert (job.batches_done, job.batches_failed, job.state) == counters


def test_follow_backfills_and_unfollow_purges(live_worker):
    feed_settings_update(follow_backfill_count=3)
    author, _ = author_with_followers(1)
    posts = [publish(author, object_id=f"p{i}") for i in range(5)]
    for a in posts:
        wait_job(a.id)
    other, _ = author_with_followers(0)
    other_post = publish(other)
    reader = UserFactory()
    activate(reader)
    follow_create(follower_id=reader.pk, followee_id=other.pk)
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    newest_three = sorted((a.id for a in posts), reverse=True)[:3]
    assert store.feed_ids(reader.pk) == sorted([*newest_three, other_post.id], reverse=True)
    follow_delete(follower_id=reader.pk, followee_id=author.pk)
    assert store.feed_ids(reader.pk) == [other_post.id]


def test_delete_removes_the_activity_from_every_feed_and_drops_its_body(live_worker):
    feed_settings_update(fanout_batch_size=2)
    author, fans = author_with_followers(5)
    activity = publish(author)
    wait_job(activity.id)
    assert auth_client(author).delete(f"/api/activities/{activity.id}/").status_code == 204
    wait_job(activity.id, kind="remove")
    for uid in [author.pk, *(f.pk for f in fans)]:
        assert store.feed_ids(uid) == []
    assert store.timeline_ids(author.pk) == []
    assert store.get_bodies([activity.id]) == {}


def test_rolled_back_publish_enqueues_nothing(live_worker):
    author, fans = author_with_followers(3)
    with pytest.raises(RuntimeError), transaction.atomic():
        activity_publish(actor_id=author.pk, data=dict(STAR))
        raise RuntimeError("the caller's transaction fails after the insert")
    control = publish(author, object_id="control")  # a later publish is processed normally
    wait_job(control.id)
    assert Activity.objects.filter(home=True).count() == 1  # (follows made "followed" ones)
    assert FanoutJob.objects.filter(kind="publish").count() == 1
    for fan in fans:
        assert store.feed_ids(fan.pk) == [control.id]


def _job_whose_enqueue_was_lost(author) -> tuple[Activity, FanoutJob]:
    """bulk_create fires no signal: exactly the state a crash between commit and enqueue leaves."""
    from activities.ids import make_id

    now = timezone.now().replace(microsecond=0)
    activity = Activity.objects.bulk_create(
        [Activity(id=make_id(now), actor=author, time=now, **STAR)]
    )[0]
    return activity, FanoutJob.objects.create(activity_id=activity.id, actor_id=author.pk)


def _sweep_until_delivered(activity: Activity, fans) -> None:
    from feeds.tasks import sweep_stalled_jobs_task

    sweep_stalled_jobs_task.delay()
    assert wait_job(activity.id).state == "done"
    for fan in fans:
        assert store.feed_ids(fan.pk) == [activity.id]


def test_sweeper_reenqueues_a_job_whose_enqueue_was_lost(live_worker):
    author, fans = author_with_followers(2)
    activity, job = _job_whose_enqueue_was_lost(author)
    FanoutJob.objects.filter(id=job.id).update(updated_at=timezone.now() - timedelta(minutes=5))
    _sweep_until_delivered(activity, fans)


def test_orm_save_is_fanned_out_too(live_worker):
    author, fans = author_with_followers(2)
    activity = Activity.objects.create(actor=author, **STAR)  # admin and shell path
    wait_job(activity.id)
    for fan in fans:
        assert store.feed_ids(fan.pk) == [activity.id]


def test_sweeper_resends_the_lost_batches_of_a_running_job(live_worker, settings):
    feed_settings_update(fanout_batch_size=2)
    author, fans = author_with_followers(5)
    activity, job = _job_whose_enqueue_was_lost(author)
    # Planned, and its batches never sent (a worker killed holding them, a broker error).
    lost = fanout.fanout_start(job_id=job.id)
    assert len(lost) == 3 and job_of(activity.id).state == "running"
    stalled = timezone.now() - timedelta(seconds=settings.FEEDSITE_SWEEP_STALLED_SECONDS + 5)
    FanoutJob.objects.filter(id=job.id).update(updated_at=stalled)
    _sweep_until_delivered(activity, fans)
    # By default such a job resumes within a minute: stalled for this long, plus one beat.
    every = settings.CELERY_BEAT_SCHEDULE["sweep-stalled-fanout-jobs"]["schedule"]
    assert settings.FEEDSITE_SWEEP_STALLED_SECONDS + every <= 60


def test_an_unfollow_before_a_deletes_removal_ran_still_takes_the_activity_out(live_worker):
    """Found by the soak: a deleted activity whose removal job waited (its message died with a
    killed worker) and a follower who unfollowed meanwhile. The purge read the author's ids from
    PostgreSQL (the activity was gone) and the removal no longer saw the follower: the activity
    stayed in that feed for good."""
    from follows.services import follow_delete

    author, fans = author_with_followers(2)
    activity = Activity.objects.create(actor=author, **STAR)
    wait_job(activity.id)
    assert all(store.feed_ids(f.pk) == [activity.id] for f in fans)
    # The delete as a crash leaves it: the row gone, its removal job recorded but not run.
    Activity.objects.filter(id=activity.id)._raw_delete(Activity.objects.db)
    FanoutJob.objects.create(
        activity_id=activity.id, actor_id=author.pk, kind=FanoutJob.Kind.REMOVE
    )
    follow_delete(follower_id=fans[0].pk, followee_id=author.pk)
    assert store.feed_ids(fans[0].pk) == []
    assert store.feed_ids(fans[1].pk) == [activity.id]  # (its removal is still to run)
