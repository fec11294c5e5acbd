"""Stream catch-up (issue 25, point 3) and `event: update` (point 4) through the production
layout (Caddy -> uvicorn), with the real worker fanning out: a reconnect with the
`Last-Event-ID` its stream last sent gets every feed activity that stream did not deliver, once,
oldest first, with current bodies, from the Redis feed and then PostgreSQL; past 1,000 an
`event: reset`; an activity arriving out of id order is neither lost nor sent twice."""

from __future__ import annotations

import json
import queue
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from activities.ids import id_to_time, make_id
from activities.models import Activity
from activities.services import activity_publish
from feeds import store
from feeds.models import FanoutJob
from feeds.replay import REPLAY_BOUND, feed_replay
from feeds.services import feed_settings_update
from follows.services import follow_create, mute_create
from tests.conftest import activate, auth_client, wait_until
from tests.factories import UserFactory
from tests.integration.test_stream import Stream, post

pytestmark = pytest.mark.worker


def events(stream: Stream, seconds: float, count: int | None = None) -> list[tuple[str, str, dict]]:
    """(kind, id line or "", data) of each event read within ``seconds``, or the first
    ``count`` of them."""
    found: list[tuple[str, str, dict]] = []
    kind, eid = "message", ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (count is None or len(found) < count):
        try:
            line = stream.lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if line.startswith("id:"):
            eid = line[3:].strip()
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            found.append((kind, eid, json.loads(line[5:])))
            kind, eid = "message", ""
    return found


def closed(stream: Stream, user) -> None:
    """Close the client's stream and wait until the server has let it go (its registry entry
    gone), so nothing more is written to it."""
    stream.close()
    wait_until(lambda: store.client().zcard(store.streams_key(user.pk)) == 0, timeout=10)


def fanned_out(ids: list[str]) -> None:
    wait_until(
        lambda: (
            FanoutJob.objects.filter(
                activity_id__in=[int(i) for i in ids], kind="publish", state="done"
            ).count()
            == len(ids)
        ),
        timeout=60,
    )


def publish(author, object_id: str, **extra) -> str:
    data = {"verb": "starred", "object_type": "project", "object_id": object_id, **extra}
    activity, _ = activity_publish(actor_id=author.pk, data=data)
    return str(activity.id)


def test_a_reconnect_replays_150_missed_from_redis_then_postgresql_once_oldest_first(
    live_worker, served
):
    feed_settings_update(feed_max_length=20)  # the feed holds 20: the rest from PostgreSQL
    author, muted, reader = UserFactory(), UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    follow_create(follower_id=reader.pk, followee_id=muted.pk)
    mute_create(muter_id=reader.pk, muted_id=muted.pk)
    activate(reader)  # its feed built, as the page it loaded before streaming built it
    stream = Stream(served, reader)
    first = post(author, "first")
    kind, eid, item = events(stream, 10, count=1)[0]
    assert (kind, eid, item["id"]) == ("activity", first, first)
    closed(stream, reader)

    missed = [publish(author, f"missed-{i}") for i in range(150)]
    hidden = [publish(muted, f"hidden-{i}") for i in range(3)]  # muted: never shown
    gone = [missed.pop(0), missed.pop()]  # deleted: never shown, from either side
    fanned_out([*missed, *gone, *hidden])
    for aid in gone:
        assert auth_client(author).delete(f"/api/activities/{aid}/").status_code == 204
    held = store.feed_ids(reader.pk)
    assert len(held) <= 21 and min(int(m) for m in missed) < min(held)  # PostgreSQL's too

    again = Stream(served, reader, last_event_id=first)
    try:
        got = events(again, 20, count=len(missed))
        assert [item["id"] for _, _, item in got] == sorted(missed, key=int)  # oldest first
        assert {kind for kind, _, _ in got} == {"activity"}
        assert all(eid == item["id"] for _, eid, item in got)  # in order: its own id
        assert all(item["actor"]["id"] == author.pk for _, _, item in got)
        assert events(again, 2) == []  # once: nothing more
        last = got[-1][1]
    finally:
        closed(again, reader)
    # Reconnecting with the last id it sent: nothing again.
    third = Stream(served, reader, last_event_id=last)
    try:
        assert events(third, 3) == []
    finally:
        third.close()


def test_an_activity_arriving_out_of_id_order_is_neither_lost_nor_sent_twice(live_worker, served):
    author, reader = UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    stream = Stream(served, reader)
    now = timezone.now()
    newest = post(author, "newest")
    assert events(stream, 10, count=1)[0][1] == newest
    # Made 30 s earlier (a concurrent publisher's), announced after: it arrives below the
    # stream's high-water id, which its event carries unchanged.
    late = publish(author, "late", time=now - timedelta(seconds=30))
    kind, eid, item = events(stream, 10, count=1)[0]
    assert (kind, eid, item["id"]) == ("activity", newest, late)
    closed(stream, reader)
    # While the client is away: one more made before its high-water id (announced late, as a
    # stalled fan-out would) and one after. "Everything above Last-Event-ID" misses the first.
    below = publish(author, "below", time=now - timedelta(seconds=20))
    above = publish(author, "above")
    fanned_out([below, above])

    again = Stream(served, reader, last_event_id=newest)
    try:
        got = events(again, 10, count=2)
        assert [(eid, item["id"]) for _, eid, item in got] == [(newest, below), (above, above)]
        assert events(again, 2) == []  # not `late` nor `newest` again
        live = post(author, "live")
        assert [(e, i["id"]) for _, e, i in events(again, 10, count=1)] == [(live, live)]
    finally:
        closed(again, reader)
    third = Stream(served, reader, last_event_id=live)  # its own id again: nothing owed
    try:
        assert events(third, 3) == []
    finally:
        third.close()


def test_more_than_1000_missed_is_a_reset_to_the_feeds_newest_id(live_worker, served):
    feed_settings_update(feed_max_length=20)
    author, reader = UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    stream = Stream(served, reader)
    first = post(author, "first")
    assert events(stream, 10, count=1)[0][1] == first
    closed(stream, reader)
    # 1,001 activities written straight into PostgreSQL (no fan-out: cheap), and the reader's
    # feed dropped: it is rebuilt from PostgreSQL, 20 in Redis, the rest below.
    start = id_to_time(int(first)) + timedelta(milliseconds=1)  # just after `first`
    rows = [
        Activity(
            id=make_id(start + timedelta(milliseconds=i), low=0),
            actor=author,
            time=start + timedelta(milliseconds=i),
            verb="starred",
            object_type="project",
            object_id=f"bulk-{i}",
        )
        for i in range(REPLAY_BOUND + 1)
    ]
    Activity.objects.bulk_create(rows)
    store.client().delete(store.feed_key(reader.pk))
    newest = str(rows[-1].id)
    wait_until(lambda: timezone.now() > rows[-1].time, timeout=5)  # the next post is newer

    again = Stream(served, reader, last_event_id=first)
    try:
        kind, eid, data = events(again, 20, count=1)[0]
        assert (kind, eid, data["id"]) == ("reset", newest, newest)
        assert "reload" in data["detail"]
        live = post(author, "after-the-reset")  # the stream goes on from the feed's newest
        assert [(k, e, i["id"]) for k, e, i in events(again, 10, count=1)] == [
            ("activity", live, live)
        ]
    finally:
        closed(again, reader)
    reloaded = Stream(served, reader, last_event_id=newest)  # what a reloaded client sends
    try:
        assert [(k, i["id"]) for k, _, i in events(reloaded, 10, count=1)] == [("activity", live)]
        assert events(reloaded, 2) == []
    finally:
        reloaded.close()


def test_the_bound_is_1000_activities(transactional_db):
    feed_settings_update(feed_max_length=10)
    author, reader = UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    start = timezone.now()
    rows = [
        Activity(
            id=make_id(start + timedelta(milliseconds=i), low=0),
            actor=author,
            time=start + timedelta(milliseconds=i),
            verb="starred",
            object_type="project",
            object_id=f"bulk-{i}",
        )
        for i in range(1_001)
    ]
    Activity.objects.bulk_create(rows)
    floor = rows[0].id  # the first is the client's; 1,000 above it
    replay = feed_replay(user_id=reader.pk, floor=floor)
    assert replay.reset_to is None
    assert [int(i["id"]) for i in replay.items] == [r.id for r in rows[1:]]
    # One more: a reset; one skipped (sent before): 1,000 again.
    assert feed_replay(user_id=reader.pk, floor=floor - 1).reset_to == rows[-1].id
    again = feed_replay(user_id=reader.pk, floor=floor - 1, skip=[rows[500].id])
    assert again.reset_to is None and len(again.items) == 1_000
    # A smaller bound, as the stream would be given one.
    assert feed_replay(user_id=reader.pk, floor=rows[-6].id, bound=5).reset_to is None
    assert feed_replay(user_id=reader.pk, floor=rows[-7].id, bound=5).reset_to == rows[-1].id


def test_an_edit_reaches_every_stream_that_received_it_or_would_have_once(live_worker, served):
    author, reader, muter, stranger = UserFactory(), UserFactory(), UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    follow_create(follower_id=muter.pk, followee_id=author.pk)
    mute_create(muter_id=muter.pk, muted_id=author.pk)
    streams = {u: Stream(served, u) for u in (author, reader, muter, stranger)}
    try:
        aid = post(author, "to-edit")
        for user in (author, reader):
            assert events(streams[user], 10, count=1)[0][1] == aid
        late = Stream(served, reader)  # opened after it: it would have received it
        res = auth_client(author).patch(
            f"/api/activities/{aid}/", {"object_title": "edited"}, format="json"
        )
        assert res.status_code == 200 and res.json()["edited_at"]
        for user in (author, reader):
            got = events(streams[user], 10, count=1)
            assert [(k, e, i["id"]) for k, e, i in got] == [("update", aid, aid)]
            item = got[0][2]
            assert item["object_title"] == "edited" and item["edited_at"]
            assert item["activity_ids"] == [aid] and item["actor"]["id"] == author.pk
        got = events(late, 10, count=1)
        assert [(k, e, i["object_title"]) for k, e, i in got] == [("update", "", "edited")]
        for user, stream in streams.items():  # once; the muter and the stranger nothing
            assert events(stream, 1.5) == [], user
        # The update moved no id: the next activity's event carries its own.
        nxt = post(author, "next")
        assert [(k, e) for k, e, _ in events(streams[reader], 10, count=1)] == [("activity", nxt)]
        late.close()
    finally:
        for stream in streams.values():
            stream.close()


def test_ledger_writes_of_one_turn_share_one_round_trip(monkeypatch):
    """An activity handed to many open streams wakes their writers at once: their ledger
    writes go to Redis in one pipeline, not one round trip each through the pool."""
    import asyncio

    from feeds import stream
    from feeds.replay import sent_member
    from feeds.store.keys import stream_ledger_key

    calls: list[int] = []
    real = stream.ledger_note

    async def counted(r, writes, *args):
        calls.append(len(writes))
        await real(r, writes, *args)

    monkeypatch.setattr(stream, "ledger_note", counted)
    gw = stream.Gateway()
    monkeypatch.setattr(stream, "_gateway", gw)
    streams = [stream.Stream(user_id, {1}, 10, floor=100) for user_id in range(1, 51)]

    async def write_all() -> None:
        await asyncio.gather(*(stream._note(s, {sent_member(s.tag, 200): 200}) for s in streams))
        await gw.redis.aclose()

    asyncio.run(write_all())
    assert calls == [50]
    r = store.client()
    for s in streams:
        key = stream_ledger_key(s.user_id)
        assert r.zscore(key, sent_member(s.tag, 200)) == 200
        assert r.zscore(key, f"{s.tag}:f") == 100 and r.ttl(key) > 3600
