"""R16: concurrent publishes of the same (actor, foreign_id) make one activity and one job."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection

from activities.models import Activity
from activities.services import activity_publish
from feeds.models import FanoutJob
from tests.conftest import make_token
from tests.factories import UserFactory

pytestmark = pytest.mark.worker
BODY = {"verb": "starred", "object_type": "project", "object_id": "p", "foreign_id": "ext-42"}


def test_concurrent_service_calls_create_exactly_one(live_worker):
    author = UserFactory()
    barrier = threading.Barrier(12)

    def publish() -> bool:
        try:
            barrier.wait(timeout=10)
            return activity_publish(actor_id=author.pk, data=dict(BODY))[1]
        finally:
            connection.close()

    with ThreadPoolExecutor(12) as pool:
        created = list(pool.map(lambda _: publish(), range(12)))
    assert created.count(True) == 1 and created.count(False) == 11
    assert Activity.objects.filter(actor=author).count() == 1
    assert FanoutJob.objects.filter(actor_id=author.pk).count() == 1


def test_fifty_concurrent_posts_one_201_and_forty_nine_200(live_worker, served):
    author = UserFactory()
    token = make_token(author)
    headers = {"Authorization": f"Token {token}"}

    def post(_: int) -> int:
        return httpx.post(
            f"{served}/api/activities/", json=BODY, headers=headers, timeout=30
        ).status_code

    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(post, range(50)))
    assert codes.count(201) == 1 and codes.count(200) == 49, codes
    assert Activity.objects.filter(actor=author).count() == 1
    assert FanoutJob.objects.filter(actor_id=author.pk).count() == 1
