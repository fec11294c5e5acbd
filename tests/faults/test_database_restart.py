"""PostgreSQL drops every connection (a restart, a failover): the next requests find their pooled
connections dead. The pool checks a connection before lending it, so none of them is a 500."""

from __future__ import annotations

import httpx
import pytest
from django.db import connection

from tests.conftest import auth_client
from tests.factories import UserFactory

# Every test here stops, kills or points away from a PostgreSQL server; SQLite has none, so on
# SQLite they are reported as skipped (not passed) with this reason.
pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL: SQLite has no server to restart (set DATABASE_URL=postgres://...)",
)


def _kill_other_connections() -> int:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        return cur.fetchone()[0]


def test_no_500_after_the_database_dropped_every_connection(served, transactional_db):
    user = UserFactory()
    headers = {"Authorization": f"Token {auth_client(user)._credentials['HTTP_AUTHORIZATION'][6:]}"}
    url = f"{served}/api/users/{user.pk}/"
    for _ in range(8):  # every web worker holds pooled connections now
        assert httpx.get(url, headers=headers, timeout=10).status_code == 200
    assert _kill_other_connections() >= 1
    statuses = [httpx.get(url, headers=headers, timeout=10).status_code for _ in range(8)]
    assert statuses == [200] * 8


def test_with_the_database_down_requests_answer_a_json_503_never_a_500(transactional_db):
    """PostgreSQL unreachable (the served stack points at a port nobody listens on): what needs
    the database answers a JSON 503 with Retry-After; nothing answers 500."""
    from feedsite.embedded import free_port
    from tests.conftest import serve_for_tests

    user = UserFactory()
    client = auth_client(user)
    assert client.get(f"/api/users/{user.pk}/").status_code == 200  # token cached in Redis
    key = client._credentials["HTTP_AUTHORIZATION"][6:]
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    with serve_for_tests("served-nodb", DATABASE_URL=dead, DB_POOL_TIMEOUT="2") as url:
        headers = {"Authorization": f"Token {key}"}
        calls = [
            ("GET", f"/api/users/{user.pk}/", None),
            ("POST", "/api/activities/", {"verb": "starred", "object_type": "p", "object_id": "x"}),
            ("POST", "/api/auth/register/", {"username": "nodb", "password": "a-long-pw-4242"}),
            ("GET", "/api/feed/", None),
            ("POST", "/api/auth/token/", {"username": "nodb", "password": "a-long-pw-4242"}),
        ]
        for method, path, body in calls:
            res = httpx.request(method, url + path, json=body, headers=headers, timeout=30)
            assert res.status_code == 503, (path, res.status_code, res.text[:300])
            assert res.headers["Retry-After"] and "unavailable" in res.json()["detail"]


def test_the_worker_recovers_at_once_after_the_database_dropped_its_connections(live_worker):
    """Every worker child's connections die at once; the next fan-out is done without a failed
    batch (each task hands its connection back to the pool, which checks it before lending it:
    feedsite.celery.release_db_connection)."""
    from activities.services import activity_publish
    from feeds.models import FanoutJob
    from feeds.services import feed_settings_update
    from follows.models import Follow, UserStats
    from tests.conftest import activate, wait_until

    feed_settings_update(fanout_batch_size=1)
    author, fans = UserFactory(), UserFactory.create_batch(30)
    Follow.objects.bulk_create([Follow(follower=f, followee=author) for f in fans])
    UserStats.objects.filter(user=author).update(followers_count=len(fans))
    activate(*fans)

    def publish_and_wait(tag: str) -> FanoutJob:
        activity, _ = activity_publish(
            actor_id=author.pk, data={"verb": "starred", "object_type": "p", "object_id": tag}
        )
        return wait_until(
            lambda: (
                (j := FanoutJob.objects.get(activity_id=activity.id)).state in ("done", "failed")
                and j
            ),
            timeout=30,
        )

    assert publish_and_wait("before").state == "done"  # both children hold connections now
    assert _kill_other_connections() >= 1
    job = publish_and_wait("after")
    assert (job.state, job.batches_failed) == ("done", 0)
