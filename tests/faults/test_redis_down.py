"""Redis (the feed store and cache) unreachable: publishing still answers 201 and saves (fan-out
resumes when Redis is back), registering works, feed reads answer a JSON 503 with Retry-After,
and nothing answers 500. The whole production layout runs against a Redis port nobody listens
on; PostgreSQL and the broker are the real ones."""

from __future__ import annotations

import httpx
import pytest
from django.conf import settings

from activities.models import Activity
from feedsite.embedded import free_port
from tests.conftest import make_token, serve_for_tests
from tests.factories import UserFactory


@pytest.fixture
def served_without_redis(transactional_db):
    with serve_for_tests(
        "served-noredis",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        WEB_CONCURRENCY="1",
    ) as url:
        yield url


@pytest.mark.parametrize("id_token", [True, False], ids=["id-token", "plain-token"])
def test_with_redis_down_publish_saves_reads_answer_503_and_nothing_500s(
    served_without_redis, id_token
):
    url = served_without_redis
    user = UserFactory()
    key = make_token(user, id_prefix=id_token)
    auth = {"Authorization": f"Token {key}"}
    res = httpx.post(
        f"{url}/api/activities/",
        json={"verb": "starred", "object_type": "project", "object_id": "p-down"},
        headers=auth,
        timeout=15,
    )
    assert res.status_code == 201, res.text
    assert Activity.objects.filter(id=int(res.json()["id"])).exists()
    for params in ({}, {"format": "json"}):
        feed = httpx.get(f"{url}/api/feed/", params=params, headers=auth, timeout=15)
        assert feed.status_code == 503, feed.text
        assert feed.headers["Retry-After"] and "unavailable" in feed.json()["detail"]
    name = f"down-{user.pk}-{int(id_token)}"
    reg = httpx.post(
        f"{url}/api/auth/register/",
        json={"username": name, "password": "a-long-enough-password-42"},
        timeout=15,
    )
    assert reg.status_code == 201, reg.text
    profile = httpx.get(f"{url}/api/users/{user.pk}/", headers=auth, timeout=15)
    assert profile.status_code == 200, profile.text
