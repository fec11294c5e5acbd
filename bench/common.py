"""Shared bench set-up: Django on the configured database, a key prefix of its own, a real worker."""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedsite.settings")
os.environ.setdefault("FEEDSITE_KEY_PREFIX", "fsbench")
os.environ.setdefault("FEEDSITE_LOG_LEVEL", "WARNING")
os.environ.setdefault("DEBUG", "0")  # production-like: no query log in the worker
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # a bench's own, per run

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from feedsite import queues as celery_queues  # noqa: E402

User = get_user_model()


def migrate() -> None:
    """Create the bench's PostgreSQL database when it does not exist yet, then migrate."""
    db = settings.DATABASES["default"]
    if "postgresql" in db["ENGINE"]:
        import psycopg
        from psycopg import sql

        admin = psycopg.connect(
            host=db["HOST"],
            port=db["PORT"] or 5432,
            user=db["USER"],
            password=db["PASSWORD"],
            dbname="postgres",
            autocommit=True,
        )
        with admin:
            exists = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]
            ).fetchone()
            if not exists:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
    call_command("migrate", verbosity=0)


def ensure_users(prefix: str, n: int) -> list[int]:
    """Users prefix-0 .. prefix-(n-1), created in bulk on the first run and reused after."""
    from follows.models import UserStats

    existing = dict(
        User.objects.filter(username__startswith=f"{prefix}-").values_list("username", "id")
    )
    missing = [f"{prefix}-{i}" for i in range(n) if f"{prefix}-{i}" not in existing]
    for start in range(0, len(missing), 5000):
        created = User.objects.bulk_create(
            [User(username=u, password="!") for u in missing[start : start + 5000]]
        )
        UserStats.objects.bulk_create(
            [UserStats(user_id=u.pk) for u in created], ignore_conflicts=True
        )
    if missing:
        existing = dict(
            User.objects.filter(username__startswith=f"{prefix}-").values_list("username", "id")
        )
    return [existing[f"{prefix}-{i}"] for i in range(n)]


def ensure_follows(follower_ids: list[int], followee_id: int) -> None:
    """Exactly ``follower_ids`` follow ``followee_id``, at any size on a reused database: rows
    added and removed in bulk (no signals: no fan-out jobs, no per-row counter bumps), then the
    counters of every user touched are recounted from the follows table, so they are exact."""
    from django.db import transaction

    from follows.models import Follow

    want = set(follower_ids)
    have = set(Follow.objects.filter(followee_id=followee_id).values_list("follower_id", flat=True))
    gone, new = sorted(have - want), sorted(want - have)
    with transaction.atomic():
        for start in range(0, len(gone), 5000):
            Follow.objects.filter(
                followee_id=followee_id, follower_id__in=gone[start : start + 5000]
            )._raw_delete(Follow.objects.db)
        for start in range(0, len(new), 10000):
            Follow.objects.bulk_create(
                [Follow(follower_id=f, followee_id=followee_id) for f in new[start : start + 10000]]
            )
        follow_counters_recount([followee_id, *gone, *want])


def follow_counters_recount(user_ids: list[int]) -> None:
    """Set the users' followers_count and following_count to what the follows table holds
    (their UserStats rows created when missing): one UPDATE per 5,000 users."""
    from django.db import connection

    from follows.models import Follow, UserStats

    ids = sorted(set(user_ids))
    UserStats.objects.bulk_create([UserStats(user_id=u) for u in ids], ignore_conflicts=True)
    q = connection.ops.quote_name
    stats, follows = q(UserStats._meta.db_table), q(Follow._meta.db_table)
    with connection.cursor() as cursor:
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            cursor.execute(
                f"UPDATE {stats} SET"  # noqa: S608 - table names from the models, ids as params
                f" followers_count = (SELECT COUNT(*) FROM {follows} f"
                f" WHERE f.followee_id = {stats}.user_id),"
                f" following_count = (SELECT COUNT(*) FROM {follows} f"
                f" WHERE f.follower_id = {stats}.user_id)"
                f" WHERE user_id IN ({', '.join(['%s'] * len(chunk))})",
                chunk,
            )


def tokens_for(user_ids: list[int]) -> list[str]:
    """A fresh API token per user (hashed at rest: an earlier run's cannot be read back)."""
    from knox.models import AuthToken

    from feedsite.api.auth import tokens_bulk_create

    AuthToken.objects.filter(user_id__in=user_ids)._raw_delete(AuthToken.objects.db)
    tokens = tokens_bulk_create(user_ids)
    return [tokens[u] for u in user_ids]


_REDIS_CONF_BEFORE: dict[str, str] = {}


def apply_redis_conf() -> dict[str, str]:
    """Apply config/redis.conf's sorted-set settings to the server the bench uses (CONFIG SET);
    the server's own values come back when the bench exits (it may be shared)."""
    import atexit

    from feeds import store

    applied = {}
    for line in (ROOT / "config" / "redis.conf").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("zset-"):
            if not _REDIS_CONF_BEFORE.get(parts[0]):
                before = store.client().config_get(parts[0]).get(parts[0])
                if not _REDIS_CONF_BEFORE:
                    atexit.register(_restore_redis_conf)
                _REDIS_CONF_BEFORE[parts[0]] = before
            store.client().config_set(parts[0], parts[1])
            applied[parts[0]] = parts[1]
    return applied


def _restore_redis_conf() -> None:
    from feeds import store

    for name, value in _REDIS_CONF_BEFORE.items():
        if value is not None:
            try:
                store.client().config_set(name, value)
            except Exception as exc:  # noqa: BLE001 - the bench's result stands
                print(f"could not restore {name}={value}: {exc}")


def delete_prefixed() -> None:
    from feeds import store

    r = store.client()
    batch = []
    for key in r.scan_iter(match=f"{settings.FEEDSITE_KEY_PREFIX}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            r.delete(*batch)
            batch = []
    if batch:
        r.delete(*batch)


class Worker:
    """A real `celery worker` subprocess (prefork) on the bench's database, Redis and broker."""

    def __init__(self, concurrency: int = 2, queues: str = ",".join(celery_queues.ALL)) -> None:
        self.log = Path(settings.VAR_DIR) / f"bench-worker-{os.getpid()}.log"
        from feedsite.embedded import celery_worker_args

        self.proc = subprocess.Popen(
            celery_worker_args(
                queues=queues,
                concurrency=concurrency,
                loglevel="WARNING",
                node=f"bench{os.getpid()}@%h",
            ),
            cwd=ROOT,
            stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # noqa: SIM115
        )
        from feedsite.celery import app

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=0.5)
            if any(f"bench{os.getpid()}@" in name for r in replies for name in r):
                return
        self.stop()
        raise RuntimeError(f"worker did not start; see {self.log}")

    def stop(self) -> None:
        from feedsite.embedded import stop_group

        stop_group(self.proc)


def median(values: list[float]) -> float:
    return statistics.median(values)
