"""GET /api/feed/stream/ through the production layout (Caddy -> uvicorn): SSE on Redis pub/sub,
with the real worker fanning out."""

from __future__ import annotations

import json
import queue
import threading
import time

import httpx
import pytest

from feeds.services import feed_settings_update
from follows.services import follow_create
from tests.conftest import auth_client, make_token
from tests.factories import UserFactory

pytestmark = pytest.mark.worker


def token(user) -> str:
    return make_token(user)


class Stream:
    """Reads an SSE stream in a thread; lines land in a queue."""

    def __init__(self, url: str, user, last_event_id: str | None = None) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.status: queue.Queue[int] = queue.Queue()
        headers = {"Authorization": f"Token {token(user)}"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.stop = threading.Event()

        def run() -> None:
            with httpx.stream("GET", f"{url}/api/feed/stream/", headers=headers, timeout=30) as res:
                self.status.put(res.status_code)
                for line in res.iter_lines():
                    self.lines.put(line)
                    if self.stop.is_set():
                        return

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.status.get(timeout=10) == 200
        self.wait_for(lambda line: line.startswith("retry:"))

    def wait_for(self, match, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if match(line):
                return line
        raise AssertionError("no matching line on the stream")

    def next_activity(self, timeout: float = 10.0) -> dict:
        line = self.wait_for(lambda line: line.startswith("data: "), timeout)
        return json.loads(line[len("data: ") :])

    def close(self) -> None:
        self.stop.set()


def post(user, object_id: str) -> str:
    res = auth_client(user).post(
        "/api/activities/",
        {"verb": "starred", "object_type": "project", "object_id": object_id},
        format="json",
    )
    assert res.status_code == 201
    return res.json()["id"]


def test_stream_receives_a_post_made_after_connecting(live_worker, served):
    feed_settings_update(celebrity_threshold=2)
    author, star, reader, stranger = UserFactory(), UserFactory(), UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    follow_create(follower_id=reader.pk, followee_id=star.pk)
    follow_create(follower_id=UserFactory().pk, followee_id=star.pk)  # star: pull author
    stream = Stream(served, reader)
    try:
        post(stranger, "not-followed")  # must never show
        started = time.monotonic()
        aid = post(author, "pushed")
        item = stream.next_activity()
        assert item["id"] == aid and item["actor"]["id"] == author.pk
        assert item["activity_ids"] == [aid] and item["actor_count"] == 1
        assert time.monotonic() - started < 5
        pulled = post(star, "pulled")
        assert stream.next_activity()["id"] == pulled
        stream.wait_for(lambda line: line == ": heartbeat")  # every 1 s under test settings
    finally:
        stream.close()
    # The server drops its subscription once the client has gone.
    from feeds import store
    from tests.conftest import wait_until

    def subscribers() -> int:
        return dict(store.client().pubsub_numsub(store.live_channel(author.pk)))[
            store.live_channel(author.pk).encode()
        ]

    wait_until(lambda: subscribers() == 0, timeout=10)


def test_reconnect_with_last_event_id_replays_what_was_missed(live_worker, served):
    author, reader = UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    stream = Stream(served, reader)
    first = post(author, "first")
    assert stream.next_activity()["id"] == first
    stream.close()
    missed = [post(author, f"missed-{i}") for i in range(3)]
    from feeds.models import FanoutJob
    from tests.conftest import wait_until

    wait_until(
        lambda: (
            FanoutJob.objects.filter(activity_id__in=[int(m) for m in missed], state="done").count()
            == 3
        )
    )
    again = Stream(served, reader, last_event_id=first)
    try:
        assert [again.next_activity()["id"] for _ in range(3)] == missed  # oldest first
    finally:
        again.close()


def test_stream_needs_authentication_and_limits_open_streams(live_worker, served):
    assert httpx.get(f"{served}/api/feed/stream/", timeout=5).status_code == 401
    bad = httpx.get(
        f"{served}/api/feed/stream/", headers={"Authorization": "Token nope"}, timeout=5
    )
    assert bad.status_code == 401
    reader = UserFactory()
    streams = [Stream(served, reader) for _ in range(5)]
    try:
        res = httpx.get(
            f"{served}/api/feed/stream/",
            headers={"Authorization": f"Token {token(reader)}"},
            timeout=5,
        )
        assert res.status_code == 429 and "Retry-After" in res.headers
    finally:
        for s in streams:
            s.close()


def test_a_stream_hears_an_author_followed_after_it_opened(live_worker, served):
    author, reader = UserFactory(), UserFactory()
    stream = Stream(served, reader)
    try:
        res = auth_client(reader).post(f"/api/users/{author.pk}/follow/")
        assert res.status_code == 201
        time.sleep(0.3)  # the follow's announcement reaches the gateway
        aid = post(author, "after-follow")
        assert stream.next_activity(timeout=5)["id"] == aid
    finally:
        stream.close()


def test_streams_hold_no_database_connection_while_they_wait(live_worker, served):
    # More open streams than the database pool has connections (8): each used to hold one.
    author = UserFactory()
    readers = [UserFactory() for _ in range(12)]
    for reader in readers:
        follow_create(follower_id=reader.pk, followee_id=author.pk)
    streams = [Stream(served, reader) for reader in readers]
    try:
        aid = post(author, "to-everyone")
        assert [s.next_activity(timeout=10)["id"] for s in streams] == [aid] * 12
    finally:
        for s in streams:
            s.close()
