"""Deletes vanish at once (issue 25, point 5): once DELETE answered 204, or an admin or ORM
delete committed, no read shows the activity (feed pages on the DRF view and the lean lane,
notification pages, the detail, the author's page, stream replay, other processes), with every
Celery worker stopped; the remove job then cleans the feeds as before. The delete's tombstone
at the body key outlives the cached body, and no later write (a read's refill, an edit, a
fan-out batch delivered late) replaces it. Real PostgreSQL, Redis and worker process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from activities.models import Activity
from activities.selectors import activity_to_dict, encode_body
from feeds import fanout, store
from feeds.hydrate import hydrate
from feeds.models import FanoutBatch, FanoutJob
from feeds.services import feed_settings_update
from follows.selectors import batch_ranges
from follows.services import follow_create
from tests.conftest import activate, auth_client, make_token, verify_feeds_clean, wait_until
from tests.factories import UserFactory
from tests.integration.test_stream import Stream

pytestmark = pytest.mark.worker
STAR = {"verb": "starred", "object_type": "project"}


@contextlib.contextmanager
def workers_stopped(worker) -> Iterator[None]:
    """Every Celery worker process stopped (SIGSTOP to the worker's process group: the main
    process and its pool children), continued afterwards."""
    wait_until(lambda: not FanoutJob.objects.exclude(state="done").exists())  # idle first
    os.killpg(worker.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(worker.pid, signal.SIGCONT)


def publish(user, object_id: str, **extra) -> str:
    res = auth_client(user).post(
        "/api/activities/", {**STAR, "object_id": object_id, **extra}, format="json"
    )
    assert res.status_code == 201, res.content
    return res.json()["id"]


def jobs_done() -> None:
    wait_until(lambda: not FanoutJob.objects.exclude(state="done").exists(), timeout=30)


def ids_of(items: list[dict]) -> set[str]:
    return {aid for item in items for aid in item.get("activity_ids", [item["id"]])}


def feed_ids_read(user) -> set[str]:
    res = auth_client(user).get("/api/feed/", {"limit": 100})
    assert res.status_code == 200, res.content
    return ids_of(res.json()["items"])


def lane_ids(wsgi_get, user) -> set[str]:
    status, _, body = wsgi_get("/api/feed/", f"Token {make_token(user)}")
    assert status == 200, body
    return ids_of(json.loads(body)["items"])


def notification_ids(user) -> set[str]:
    res = auth_client(user).get("/api/notifications/", {"limit": 100})
    assert res.status_code == 200, res.content
    return ids_of(res.json()["items"])


def author_page_ids(reader, author) -> set[str]:
    res = auth_client(reader).get(f"/api/users/{author.pk}/activities/")
    assert res.status_code == 200, res.content
    return {item["id"] for item in res.json()["items"]}


def test_a_delete_vanishes_from_every_read_at_once_with_every_worker_stopped(
    live_worker, served, wsgi_get
):
    feed_settings_update(celebrity_threshold=100, aggregation_window_seconds=1)
    author, reader = UserFactory(), UserFactory()
    activate(author, reader)
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    older = publish(author, "older")
    gone = publish(author, "gone", notify=[reader.pk])
    newer = publish(author, "newer")
    jobs_done()
    # Every read has seen (and cached) the activity.
    assert {older, gone, newer} <= feed_ids_read(reader)
    assert {older, gone, newer} <= lane_ids(wsgi_get, reader)
    assert gone in notification_ids(reader) and gone in author_page_ids(reader, author)
    key = make_token(reader)
    headers = {"Authorization": f"Token {key}"}
    served_feed = httpx.get(f"{served}/api/feed/", headers=headers, timeout=10).json()
    assert gone in ids_of(served_feed["items"])

    with workers_stopped(live_worker):
        res = auth_client(author).delete(f"/api/activities/{gone}/")
        assert res.status_code == 204
        # Nothing cleaned the feeds: no worker ran the remove job.
        assert int(gone) in store.feed_ids(reader.pk)
        assert FanoutJob.objects.get(activity_id=int(gone), kind="remove").state == "pending"
        # ... and yet no read shows it, in this process or another.
        assert feed_ids_read(reader) == {older, newer}
        assert lane_ids(wsgi_get, reader) == {older, newer}
        assert gone not in notification_ids(reader)
        assert auth_client(reader).get(f"/api/activities/{gone}/").status_code == 404
        assert author_page_ids(reader, author) == {older, newer}
        for _ in range(3):  # the production layout's processes
            there = httpx.get(f"{served}/api/feed/", headers=headers, timeout=10).json()
            assert ids_of(there["items"]) == {older, newer}
            one = httpx.get(f"{served}/api/activities/{gone}/", headers=headers, timeout=10)
            assert one.status_code == 404
        # A stream reconnecting from before it replays the others, never the deleted one.
        stream = Stream(served, reader, last_event_id=older)
        try:
            assert stream.next_activity()["id"] == newer
            with pytest.raises(AssertionError, match="no matching line"):
                stream.wait_for(lambda line: line.startswith("data: ") and gone in line, 1.5)
        finally:
            stream.close()
        assert store.get_bodies([int(gone)], tombstones=True) == {int(gone): store.BODY_TOMBSTONE}
    # The workers back: the remove job cleans the feeds as before.
    wait_until(
        lambda: FanoutJob.objects.filter(
            activity_id=int(gone), kind="remove", state="done"
        ).exists(),
        timeout=30,
    )
    assert int(gone) not in store.feed_ids(reader.pk)
    assert int(gone) not in store.timeline_ids(author.pk)
    assert store.get_bodies([int(gone)], tombstones=True) == {int(gone): store.BODY_TOMBSTONE}
    verify_feeds_clean()


def test_orm_admin_and_cascade_deletes_vanish_at_once_with_every_worker_stopped(live_worker):
    feed_settings_update(celebrity_threshold=100, aggregation_window_seconds=1)
    author, other, reader = UserFactory(), UserFactory(), UserFactory()
    activate(author, other, reader)
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    follow_create(follower_id=reader.pk, followee_id=other.pk)
    by_orm, by_admin, kept = (publish(author, name) for name in ("orm", "admin", "kept"))
    cascaded = [publish(other, f"other-{i}") for i in range(3)]
    jobs_done()
    assert {by_orm, by_admin, kept, *cascaded} == feed_ids_read(reader)
    admin = get_user_model().objects.create_superuser("root", password="pw-for-tests-only")
    browser = Client()
    browser.force_login(admin)
    with workers_stopped(live_worker):
        Activity.objects.get(id=int(by_orm)).delete()  # a shell's delete (autocommit)
        assert feed_ids_read(reader) == {by_admin, kept, *cascaded}
        res = browser.post(f"/admin/activities/activity/{by_admin}/delete/", {"post": "yes"})
        assert res.status_code == 302, res.content[:500]
        assert feed_ids_read(reader) == {kept, *cascaded}
        other.delete()  # the user and, by cascade, their activities
        assert feed_ids_read(reader) == {kept}
        assert {int(by_orm), int(by_admin)} <= set(store.feed_ids(reader.pk))  # not cleaned yet
    wait_until(lambda: not set(store.feed_ids(reader.pk)) - {int(kept)}, timeout=30)
    assert feed_ids_read(reader) == {kept}


def test_the_tombstone_outlives_the_body_and_no_late_write_replaces_it(live_worker):
    author, reader = UserFactory(), UserFactory()
    activate(author, reader)
    aid = int(publish(author, "late"))
    store.add_to_feed(reader.pk, [aid], 100)  # in the feed now, whatever fan-out is at
    row = Activity.objects.select_related("actor").get(id=aid)
    loaded = encode_body(activity_to_dict(row))  # a reader's copy, loaded before the delete
    assert hydrate([aid])[aid]["id"] == str(aid)  # cached
    assert auth_client(author).delete(f"/api/activities/{aid}/").status_code == 204
    key = store.body_key(aid)
    assert store.client().get(key) == store.BODY_TOMBSTONE
    assert store.client().ttl(key) >= settings.FEEDSITE_BODY_TTL_SECONDS - 60
    store.set_bodies({aid: loaded})  # the reader's late refill
    store.set_bodies({aid: loaded}, best_effort=True)
    edited = json.loads(loaded) | {"edited_at": "2999-01-01T00:00:00.000000Z"}
    assert store.replace_body(aid, encode_body(edited)) is False  # an edit's late write
    assert store.client().get(key) == store.BODY_TOMBSTONE
    assert store.body_states([aid]) == {aid: "deleted"}
    assert store.get_bodies([aid]) == {} and hydrate([aid]) == {}
    assert aid not in {int(i) for i in feed_ids_read(reader)}


def test_a_publish_batch_delivered_after_the_delete_takes_itself_back(live_worker):
    """A redelivered (or slow) batch of the publish job writes the id after the remove job's
    batches passed: the body's tombstone tells it the activity is gone."""
    feed_settings_update(celebrity_threshold=100, fanout_batch_size=2)
    author = UserFactory()
    fans = [UserFactory() for _ in range(3)]
    activate(author, *fans)
    for fan in fans:
        follow_create(follower_id=fan.pk, followee_id=author.pk)
    aid = int(publish(author, "late-batch"))
    jobs_done()
    job = FanoutJob.objects.get(activity_id=aid, kind="publish")
    assert auth_client(author).delete(f"/api/activities/{aid}/").status_code == 204
    jobs_done()
    assert all(aid not in store.feed_ids(f.pk) for f in fans)
    FanoutBatch.objects.filter(job_id=job.id).delete()  # as if never counted: runs again
    for n, (lo, hi) in enumerate(batch_ranges(job.boundaries)):
        fanout.fanout_apply_batch(job_id=job.id, batch_no=n, lo=lo, hi=hi)
    assert all(aid not in store.feed_ids(f.pk) for f in fans)
    verify_feeds_clean()


def test_a_live_body_is_told_from_a_tombstone_and_a_missing_one(live_worker):
    author = UserFactory()
    live, gone, missing = (int(publish(author, name)) for name in ("live", "gone", "missing"))
    jobs_done()
    store.delete_body(missing)  # expired or evicted
    assert auth_client(author).delete(f"/api/activities/{gone}/").status_code == 204
    states = store.body_states([live, gone, missing])
    assert states == {live: "cached", gone: "deleted", missing: "absent"}
