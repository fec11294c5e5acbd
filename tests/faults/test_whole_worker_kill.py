"""R1: SIGKILL of the whole worker (main process and pool, no warm shutdown) a fifth of the way
into a fan-out to 20,000 followers, then a new worker: the job is done within 60 s of starting
it, every feed holds the activity exactly once, verify_feeds is clean. With the Redis broker of
`make run` (the killed worker's reserved batches stay unacknowledged for the visibility timeout:
the sweeper re-sends them) and with RabbitMQ (it redelivers them when the connection drops)."""

from __future__ import annotations

import contextlib
import time

import pytest

from feeds import store
from feeds.models import FanoutJob
from feeds.services import feed_settings_update
from tests.conftest import activate, verify_feeds_clean, wait_until
from tests.factories import UserFactory

from .stack import (
    RABBITMQ_URL,
    kill_whole,
    many_followers,
    private_redis,
    publish_elsewhere,
    rabbitmq_up,
    worker,
)

FOLLOWERS = 20_000
BATCH = 200


@contextlib.contextmanager
def broker_of(kind: str):
    if kind == "rabbitmq":
        if not rabbitmq_up():
            pytest.skip("no RabbitMQ on 127.0.0.1:5672")
        yield RABBITMQ_URL
    else:
        with private_redis() as (_, url, _):
            yield url


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_whole_worker_sigkilled_mid_fanout_a_new_worker_finishes_within_60s(transactional_db, kind):
    feed_settings_update(fanout_batch_size=BATCH, celebrity_threshold=1_000_000, feed_max_length=50)
    author = UserFactory()
    activate(author)
    fans = many_followers(author, FOLLOWERS)
    with broker_of(kind) as broker:
        with worker("whole-a", broker, purge=kind == "rabbitmq") as first:
            activity_id = publish_elsewhere(author.pk, f"whole-{kind}", broker)
            job = wait_until(
                lambda: FanoutJob.objects.filter(
                    activity_id=activity_id, kind=FanoutJob.Kind.PUBLISH, batches_done__gte=20
                ).first(),
                timeout=60,
                interval=0.005,
            )
            kill_whole(first)
        at_kill = FanoutJob.objects.get(id=job.id)
        assert at_kill.batches_total == FOLLOWERS // BATCH + 1
        assert at_kill.batches_done < at_kill.batches_total, "killed after the fan-out ended"
        started = time.monotonic()
        with worker("whole-b", broker):
            job = wait_until(
                lambda: (j := FanoutJob.objects.get(id=job.id)).state in ("done", "failed") and j,
                timeout=60,
                interval=0.2,
            )
            took = time.monotonic() - started
    print(
        f"{kind}: killed at {at_kill.batches_done}/{at_kill.batches_total}, done {took:.1f} s later"
    )
    assert (job.state, job.batches_done, job.batches_failed) == ("done", job.batches_total, 0)
    assert took <= 60
    pipe = store.client().pipeline(transaction=False)
    for fan in fans:
        pipe.zrange(store.feed_key(fan), 0, -1)
    feeds = pipe.execute()
    wrong = [
        f
        for f, ids in zip(fans, feeds, strict=True)
        if ids != [store.encode_id(activity_id), store.SENTINEL.encode()]
    ]
    assert not wrong, f"{len(wrong)} feeds not holding the activity exactly once: {wrong[:5]}"
    verify_feeds_clean("--sample", "300")
