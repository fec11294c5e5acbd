"""R2 and R4: the feed store's Redis restarted in the middle of a fan-out (append-only
persistence on, as a production Redis has: a restart loses nothing, so nothing may be lost), and
the broker down when an activity is published (201, saved, delivered once after it returns).
Each on a private Redis or broker, with real worker processes; each ends with verify_feeds."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from activities.models import Activity
from feeds import store
from feeds.models import FanoutJob
from feeds.services import feed_settings_update
from feedsite.embedded import free_port, start_redis, stop
from follows.services import follow_create
from tests.conftest import activate, make_token, serve_for_tests, wait_until
from tests.factories import UserFactory

from .stack import (
    feeds_holding,
    many_followers,
    private_redis,
    publish_elsewhere,
    restart_redis,
    verify_feeds_elsewhere,
    worker,
)

pytestmark = pytest.mark.worker


def test_feed_store_restarted_mid_fanout_loses_and_duplicates_nothing(transactional_db):
    feed_settings_update(fanout_batch_size=20, celebrity_threshold=1_000_000, feed_max_length=50)
    author = UserFactory()
    with private_redis(persistent=True) as (proc, url, workdir), private_redis() as (_, broker, _):
        feeds = redis.Redis.from_url(url)
        fans = many_followers(author, 3_000, feeds_in=feeds)
        # The production retry budget (the suite's is shrunk): 8 retries, backoff up to 60 s.
        env = {
            "REDIS_URL": url,
            "FEEDSITE_FANOUT_MAX_RETRIES": "8",
            "FEEDSITE_FANOUT_BACKOFF_MAX": "60",
        }
        with worker("store-restart", broker, **env):
            aid = publish_elsewhere(author.pk, "restart", broker, REDIS_URL=url)
            job = wait_until(
                lambda: FanoutJob.objects.filter(activity_id=aid, batches_done__gte=20).first(),
                timeout=60,
                interval=0.005,
            )
            proc = restart_redis(url, workdir, down_seconds=3.0)
            try:
                assert FanoutJob.objects.get(id=job.id).batches_done < job.batches_total
                job = wait_until(
                    lambda: (j := FanoutJob.objects.get(id=job.id)).state != "running" and j,
                    timeout=60,
                    interval=0.1,
                )
                assert (job.state, job.batches_done, job.batches_failed) == (
                    "done",
                    job.batches_total,
                    0,
                )
                wrong = feeds_holding(feeds, fans, aid)
                assert not wrong, f"{len(wrong)} feeds wrong after the restart: {wrong[:5]}"
                verify_feeds_elsewhere(REDIS_URL=url)
            finally:
                stop(proc)


def test_broker_down_at_publish_answers_201_and_delivers_once_when_it_returns(transactional_db):
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"  # nothing listens there yet
    author, fan = UserFactory(), UserFactory()
    activate(author, fan)
    follow_create(follower_id=fan.pk, followee_id=author.pk)
    key = make_token(author)
    with serve_for_tests("served-nobroker", CELERY_BROKER_URL=broker, WEB_CONCURRENCY="1") as url:
        started = time.monotonic()
        res = httpx.post(
            f"{url}/api/activities/",
            json={"verb": "starred", "object_type": "project", "object_id": "p-nobroker"},
            headers={"Authorization": f"Token {key}"},
            timeout=30,
        )
        assert res.status_code == 201, res.text
        assert time.monotonic() - started < 10
    aid = int(res.json()["id"])
    assert FanoutJob.objects.get(activity_id=aid).state == "pending"  # recorded, not sent
    server, _ = start_redis(port=port, same_port=True)
    try:
        with worker("broker-back", broker, FEEDSITE_SWEEP_PENDING_SECONDS="2"):
            wait_until(lambda: aid in store.feed_ids(fan.pk), timeout=30)
            job = wait_until(
                lambda: (j := FanoutJob.objects.get(activity_id=aid)).state == "done" and j
            )
            time.sleep(6)  # another sweep or two: nothing is delivered twice
    finally:
        stop(server)
    assert job.batches_failed == 0
    assert store.feed_ids(fan.pk) == [aid]
    assert FanoutJob.objects.get(activity_id=aid).batches_done == job.batches_total
    verify_feeds_elsewhere()


def test_an_unfollow_with_the_broker_down_still_purges_and_keeps_the_repush(live_worker):
    """Found by the soak: an unfollow whose after-commit step crossed the threshold back to push
    sent the re-push to the broker first; with the broker down that raised, and the purge of
    the unfollower's feed never ran. Now the purge comes first and the re-push is recorded in
    PostgreSQL (pending jobs the sweeper sends)."""
    from follows.services import follow_create

    feed_settings_update(celebrity_threshold=3)
    author, fan, leaver, late = UserFactory(), UserFactory(), UserFactory(), UserFactory()
    activate(author, fan, leaver, late)
    follow_create(follower_id=fan.pk, followee_id=author.pk)
    follow_create(follower_id=leaver.pk, followee_id=author.pk)
    pushed = Activity.objects.create(actor=author, verb="v", object_type="t", object_id="a").id
    wait_until(lambda: pushed in store.feed_ids(leaver.pk))
    follow_create(follower_id=late.pk, followee_id=author.pk)  # 3 followers: a pull author
    pulled = Activity.objects.create(actor=author, verb="v", object_type="t", object_id="b").id
    wait_until(lambda: FanoutJob.objects.filter(activity_id=pulled, state="done").exists())
    assert FanoutJob.objects.get(activity_id=pulled).strategy == "pull"
    key = make_token(leaver)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with serve_for_tests("served-unfollow-nobroker", CELERY_BROKER_URL=dead) as url:
        res = httpx.delete(
            f"{url}/api/users/{author.pk}/follow/",
            headers={"Authorization": f"Token {key}"},
            timeout=30,
        )
    assert res.status_code == 204, res.text
    assert pushed not in store.feed_ids(leaver.pk)  # purged despite the broker
    job = FanoutJob.objects.get(activity_id=pulled)  # the re-push, waiting for the sweeper
    assert (job.state, job.strategy) == ("pending", FanoutJob.Strategy.UNDECIDED)
