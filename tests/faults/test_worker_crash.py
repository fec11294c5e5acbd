"""R3: kill -9 one pool child of the live worker mid fan-out; the job still ends done, exactly."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from activities.services import activity_publish
from feeds import store
from feeds.models import FanoutJob
from feeds.services import feed_settings_update
from follows.models import Follow, UserStats
from tests.conftest import activate, verify_feeds_clean, wait_until
from tests.factories import UserFactory

pytestmark = pytest.mark.worker


def pool_children(main_pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(main_pid)], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


def test_killing_a_pool_child_mid_fanout_loses_and_duplicates_nothing(live_worker):
    feed_settings_update(fanout_batch_size=3, feed_max_length=10)
    author = UserFactory()
    fans = [UserFactory() for _ in range(240)]  # 80 batches
    Follow.objects.bulk_create([Follow(follower=f, followee=author) for f in fans])
    UserStats.objects.filter(user=author).update(followers_count=len(fans))
    activate(*fans)
    activity, _ = activity_publish(
        actor_id=author.pk, data={"verb": "starred", "object_type": "p", "object_id": "crash"}
    )
    job = wait_until(
        lambda: (
            FanoutJob.objects.filter(activity_id=activity.id, state="running").first()
            or FanoutJob.objects.filter(activity_id=activity.id, state="done").first()
        )
    )
    wait_until(
        lambda: FanoutJob.objects.get(id=job.id).batches_done >= 10, timeout=30, interval=0.005
    )
    victims = pool_children(live_worker.pid)
    assert victims, "the worker has pool children"
    os.kill(victims[0], signal.SIGKILL)
    assert FanoutJob.objects.get(id=job.id).batches_done < 81, "killed after the fan-out ended"
    job = wait_until(
        lambda: (j := FanoutJob.objects.get(id=job.id)).state in ("done", "failed") and j,
        timeout=60,
    )
    assert (job.state, job.batches_done, job.batches_failed) == ("done", job.batches_total, 0)
    assert job.batches_total == 81  # 80 full ranges and the open-ended last one
    for fan in fans:
        assert store.feed_ids(fan.pk) == [activity.id]  # every feed, exactly once
    assert live_worker.poll() is None  # MainProcess stays up and replaced the child
    wait_until(
        lambda: (
            "WorkerLostError" in live_worker.log_path.read_text()
            or "exited" in live_worker.log_path.read_text()
        )
    )
    verify_feeds_clean()
