"""The stream gateway's Redis subscription lost and re-established (a Redis restart, a dropped
pub/sub connection): an open stream still receives every activity, once, without reconnecting."""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest

from feeds import store
from feeds.models import FanoutJob
from follows.services import follow_create
from tests.conftest import auth_client, wait_until
from tests.factories import UserFactory
from tests.integration.test_notifications import publish
from tests.integration.test_stream import Stream, post

pytestmark = pytest.mark.worker


def _kill_gateway_subscriptions() -> int:
    """Drop every stream gateway's pub/sub connection (plain SUBSCRIBE clients; Celery's
    broker listens with PSUBSCRIBE and is left alone). Returns how many were killed."""
    r = store.client()
    killed = 0
    for line in r.execute_command("CLIENT LIST TYPE pubsub").decode().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if int(fields.get("sub", 0)) > 0 and int(fields.get("psub", 0)) == 0:
            killed += r.execute_command("CLIENT KILL ID", fields["id"]) or 0
    return killed


class Storm:
    """Kill the gateway's pub/sub connection every ``every`` seconds, in a thread."""

    def __init__(self, every: float) -> None:
        self.every, self.kills, self.stop = every, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            self.kills += _kill_gateway_subscriptions()
            time.sleep(self.every)

    def __enter__(self) -> Storm:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def _events(stream: Stream, until: float) -> list[tuple[str, str]]:
    """(kind, activity id) of every event read before ``until`` (monotonic). Every event's
    ``id:`` is the stream's high-water activity id: at least its activity's when it is a feed
    activity, and never lower than the one before."""
    events, kind, eid, high = [], "message", "", 0
    while time.monotonic() < until:
        try:
            line = stream.lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if line.startswith("id:"):
            eid = line[3:].strip()
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:") and eid:
            aid = json.loads(line[5:])["id"]
            assert int(eid) >= high
            assert kind != "activity" or int(eid) >= int(aid)
            high = int(eid)
            events.append((kind, aid))
            kind, eid = "message", ""
    return events


def _fanned_out(ids: list[str]) -> bool:
    """Every job of these activities (publish, notify) done."""
    jobs = FanoutJob.objects.filter(activity_id__in=[int(i) for i in ids])
    states = set(jobs.values_list("activity_id", "state"))
    return {a for a, _ in states} == {int(i) for i in ids} and {s for _, s in states} == {"done"}


def test_a_stream_misses_nothing_while_its_subscription_keeps_dropping(live_worker, served):
    author, other, reader = UserFactory(), UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    follow_create(follower_id=reader.pk, followee_id=other.pk)
    stream = Stream(served, reader)
    try:
        first = post(author, "before")
        assert stream.next_activity()["id"] == first
        posted = []
        with Storm(every=0.005) as storm:
            for i in range(20):
                posted.append(post(author if i % 2 else other, f"during-{i}"))
                time.sleep(0.05)
            wait_until(lambda: _fanned_out(posted), timeout=20)
            time.sleep(0.3)  # announcements made at the very end land inside the storm
        assert storm.kills >= 3
        after = post(author, "after")
        events = _events(stream, time.monotonic() + 5)
    finally:
        stream.close()
    ids = [eid for kind, eid in events if kind == "activity"]
    assert sorted(ids, key=int) == sorted([*posted, after], key=int)  # each once: no gap


class NoSubscribe:
    """While inside: the gateway's pub/sub connection dropped and no SUBSCRIBE allowed (an
    ACL), so it cannot listen again; everything announced meanwhile is lost to it."""

    def __enter__(self) -> NoSubscribe:
        store.client().execute_command("ACL SETUSER default -subscribe")
        _kill_gateway_subscriptions()
        return self

    def __exit__(self, *exc: object) -> None:
        store.client().execute_command("ACL SETUSER default +subscribe")


def test_what_a_lost_subscription_missed_arrives_once_follows_and_notifications_too(
    live_worker, served
):
    author, later, fan, reader = UserFactory(), UserFactory(), UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    stream = Stream(served, reader)
    try:
        seen = post(author, "before")
        assert stream.next_activity()["id"] == seen
        with NoSubscribe():
            time.sleep(1)  # the gateway notices, and cannot subscribe again
            missed = post(author, "missed")
            # A follow made now is announced to a gateway that does not hear it.
            res = auth_client(reader).post(f"/api/users/{later.pk}/follow/")
            assert res.status_code == 201
            from_later = post(later, "from-a-new-followee")
            noted = publish(fan, [reader.pk], object_id="noted")["id"]
            wait_until(lambda: _fanned_out([missed, from_later, noted]), timeout=20)
            assert _events(stream, time.monotonic() + 1) == []  # nothing live meanwhile
        events = _events(stream, time.monotonic() + 5)
        assert sorted(events) == sorted(
            [("activity", missed), ("activity", from_later), ("notification", noted)]
        )
        live = post(later, "live-again")  # the new followee's channel is listened to now
        assert _events(stream, time.monotonic() + 5) == [("activity", live)]
    finally:
        stream.close()
