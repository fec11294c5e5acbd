"""Pieces of a private stack for fault tests: a Redis of our own (to restart or stop), workers
on a private broker (so the suite's session worker cannot finish what a killed one left), a
publish from another process, and many followers at once."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from django.contrib.auth import get_user_model

from feeds import store
from feedsite import queues
from feedsite.embedded import celery_worker_args, start_redis, stop
from follows.models import Follow, UserStats
from tests.conftest import ROOT, _database_url, _service

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def rabbitmq_up() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5672), timeout=1):
        return True
    return False


@contextlib.contextmanager
def private_redis(*, persistent: bool = False) -> Iterator[tuple[subprocess.Popen, str, str]]:
    """A redis-server of our own: (process, url, data dir). ``persistent``: append-only file on,
    so a restart keeps the data."""
    workdir = tempfile.mkdtemp(prefix="feedsite-fault-redis-")
    extra = ("--appendonly", "yes", "--appendfsync", "always") if persistent else ()
    proc, url = start_redis(workdir=workdir, extra=extra)
    try:
        yield proc, url, workdir
    finally:
        stop(proc)


def restart_redis(url: str, workdir: str, *, down_seconds: float = 0) -> subprocess.Popen:
    """Shut the server at ``url`` down (SHUTDOWN: the append-only file is complete) and start a
    new one on the same port and directory."""
    import time

    import redis

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with contextlib.suppress(redis.ConnectionError):
        redis.Redis.from_url(url).shutdown(nosave=True)
    time.sleep(down_seconds)
    proc, _ = start_redis(
        port=port,
        workdir=workdir,
        extra=("--appendonly", "yes", "--appendfsync", "always"),
        same_port=True,
    )
    return proc


@contextlib.contextmanager
def worker(name: str, broker: str, *, purge: bool = False, **env: str):
    """A real worker with beat (the sweeper) on ``broker``."""
    args = celery_worker_args(
        queues=",".join(queues.ALL), concurrency=2, node=f"{name}{os.getpid()}@%h", beat=True
    )
    if purge:
        args.append("--purge")  # an earlier run's messages on a shared broker
    schedule = Path(tempfile.mkdtemp(prefix="feedsite-beat-")) / "schedule"
    with _service(
        args,
        name,
        lambda text: "ready." in text,
        CELERY_BROKER_URL=broker,
        CELERY_BEAT_SCHEDULE_FILENAME=str(schedule),
        DB_CONN_MAX_AGE="0",
        **env,
    ) as proc:
        yield proc


def kill_whole(proc: subprocess.Popen) -> None:
    """SIGKILL the main process and its pool at once (no warm shutdown, no requeue)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def manage(code: str, **env: str) -> str:
    """Run Python in a Django shell of another process (its own broker); its stdout."""
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=dict(os.environ, DATABASE_URL=_database_url(), **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def publish_elsewhere(actor_id: int, object_id: str, broker: str, **env: str) -> int:
    """activity_publish in another process whose Celery app talks to ``broker``."""
    out = manage(
        "from activities.services import activity_publish\n"
        f"a, _ = activity_publish(actor_id={actor_id}, data={{'verb': 'starred', "
        f"'object_type': 'project', 'object_id': {object_id!r}}})\n"
        "print(a.id)",
        CELERY_BROKER_URL=broker,
        **env,
    )
    return int(out.split()[-1])


def many_followers(author, n: int, feeds_in=None) -> list[int]:
    """``n`` new users following ``author``, each with a built (empty) feed (in the Redis
    client ``feeds_in``, the store's by default); their ids."""
    User = get_user_model()
    tag = f"m{author.pk}"
    users = User.objects.bulk_create(
        [User(username=f"{tag}-{i}", password="!") for i in range(n)], batch_size=5000
    )
    ids = [u.pk for u in users]
    UserStats.objects.bulk_create([UserStats(user_id=i) for i in ids], batch_size=5000)
    Follow.objects.bulk_create(
        [Follow(follower_id=i, followee=author) for i in ids], batch_size=5000
    )
    UserStats.objects.filter(user=author).update(followers_count=n)
    pipe = (feeds_in or store.client()).pipeline(transaction=False)
    for i in ids:
        pipe.zadd(store.feed_key(i), {store.SENTINEL: 0})
    pipe.execute()
    return ids


def feeds_holding(client, user_ids: list[int], activity_id: int) -> list[int]:
    """Of ``user_ids``, those whose feed is not exactly [built marker, activity_id]."""
    pipe = client.pipeline(transaction=False)
    for uid in user_ids:
        pipe.zrange(store.feed_key(uid), 0, -1)
    want = [store.encode_id(activity_id), store.SENTINEL.encode()]  # newest first, marker last
    return [u for u, ids in zip(user_ids, pipe.execute(), strict=True) if ids != want]


def verify_feeds_elsewhere(**env: str) -> str:
    """`manage.py verify_feeds` in another process (its own Redis); fails the test unless clean."""
    out = manage(
        "from django.core.management import call_command\ncall_command('verify_feeds')", **env
    )
    assert "wrong=0" in out, out
    return out
