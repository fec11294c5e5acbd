"""The stream's pieces that need no server: the per-stream queue, the process limit, event ids
and the catch-up ledger's arithmetic (feeds.replay)."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from feeds import store, stream
from feeds.replay import (
    EVERYTHING,
    TRIM_MEMBER,
    CatchUpPlan,
    floor_member,
    ledger_trim_below,
    plan_catch_up,
    redis_edge,
    takeover_notes,
)


def test_a_stream_gets_each_activity_once_and_a_slow_one_is_dropped():
    s = stream.Stream(user_id=1, authors={2}, maxsize=2)
    s.offer(10, b"a")
    s.offer(10, b"a")  # the same activity again (a pushed and a pulled announcement)
    assert s.queue.qsize() == 1 and not s.dropped
    s.offer(11, b"b")
    s.offer(12, b"c")  # the client did not read: its queue is full
    assert s.dropped
    assert s.queue.get_nowait() is None  # the writer's cue for the final `dropped` event
    s.offer(13, b"d")
    assert s.queue.empty()


def _scope(host: bytes) -> dict:
    return {
        "type": "http",
        "method": "GET",
        "path": stream.PATH,
        "headers": [(b"host", host)],
        "query_string": b"",
    }


def _call(scope: dict) -> list[dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def run() -> None:
        try:
            await stream.application(scope, receive, send)
        finally:  # the gateway's Redis client belongs to this event loop, which ends here
            gw, stream._gateway, stream._CATCH_UPS = stream._gateway, None, None
            if gw is not None and gw._redis is not None:
                await gw._redis.aclose()

    asyncio.run(run())
    return sent


def test_a_host_not_allowed_is_refused_as_django_would():
    start, body = _call(_scope(b"evil.example"))
    assert start["status"] == 400 and "evil.example" in json.loads(body["body"])["detail"]


def test_a_full_process_answers_503_with_retry_after(settings):
    settings.FEEDSITE_SSE_MAX_STREAMS_PER_PROCESS = 0
    start, body = _call(_scope(b"127.0.0.1:8000"))
    assert start["status"] == 503
    retry = str(settings.FEEDSITE_SSE_HEARTBEAT_SECONDS).encode()
    assert (b"retry-after", retry) in start["headers"]
    assert "streams" in json.loads(body["body"])["detail"]


# --- event ids and the catch-up ledger (feeds.replay): pure parts ---------------------------


def test_every_event_carries_the_high_water_id_never_lowered():
    s = stream.Stream(user_id=1, authors={1}, maxsize=10)
    s.offer(-5, b"event: notification\n\n")  # before any feed activity: no id line
    s.offer(20, b"event: activity\n\n")
    s.offer(12, b"event: activity\n\n")  # an older arrival: it carries 20
    s.push(b"event: update\n\n")
    s.offer(31, b"event: activity\n\n")
    batch = [s.queue.get_nowait() for _ in range(5)]
    data, notes = s.stamp(batch)
    ids = [line for line in data.split(b"\n") if line.startswith(b"id:")]
    assert data.startswith(b"event: notification")
    assert ids == [b"id: 20", b"id: 20", b"id: 20", b"id: 31"]
    assert notes == {f"{s.tag}:20": 20, f"{s.tag}:12": 20, f"{s.tag}:31": 31}


LAG = 40  # the lag bound, in ids, of the model below
SLACK = 40  # the ledger's slack, in ids (an hour in service: shrunk so the model trims)


def _note(ledger: dict[str, int], s: stream.Stream, notes: dict[str, int]) -> None:
    """feeds.stream._note (store.live.ledger_note) on a dict: the floor and what the feed held
    at the opening first, then the entries; trimmed below ledger_trim_below, the highest
    threshold recorded."""
    if not s.noted:
        known = {f"{s.tag}:k{a}": a for a in s.known}
        notes = {floor_member(s.tag): s.owed, **known, **notes}
        s.noted = True
    ledger.update(notes)
    below = ledger_trim_below(s.high if s.high is not None else s.owed, LAG, SLACK)
    for member in [m for m, score in ledger.items() if score < below]:
        del ledger[member]
    ledger[TRIM_MEMBER] = max(below, ledger.get(TRIM_MEMBER, below))


@st.composite
def _lives(draw):
    """Activities (id, announced at id + delay < id + LAG), the first stream's opening moment,
    the moments its client drops and comes back, in order, and how long each dropped stream
    goes on writing (the server has not noticed) before it would send an event its client's
    id already carries (then it notices: see feeds.replay on late events)."""
    ids = draw(st.lists(st.integers(0, 300), min_size=1, max_size=40, unique=True))
    announced = sorted((i + draw(st.integers(0, LAG - 1)), i) for i in ids)
    opened = draw(st.integers(0, 300))
    cuts = sorted(draw(st.lists(st.integers(opened, 360), max_size=6)))
    stale = draw(st.lists(st.integers(0, 30), min_size=3, max_size=3))
    return announced, opened, cuts[: len(cuts) // 2 * 2], stale


@settings(max_examples=1_000, deadline=None)
@given(_lives())
def test_reconnects_get_every_owed_activity_once_whatever_the_arrival_order(life):
    """A client's streams over a life of drops and reconnects (Last-Event-ID the last id it
    took): activities announced in any order within the lag; whatever was announced while it
    was away comes in the next reconnect's catch-up. Every activity the feed did not hold when
    the first stream opened arrives exactly once; nothing it held."""
    announced, opened, cuts, stale = life
    moments = [opened, *cuts, None]  # open, close, open, close, ..., open (for good)
    ledger: dict[str, int] = {}
    received: list[int] = []
    last_id: int | None = None
    word_taken = False
    for n in range(0, len(moments), 2):
        start, end = moments[n], moments[n + 1] if n + 1 < len(moments) else None
        if last_id is None:  # the first stream (or no id taken yet: a new one)
            if n:
                return  # the model's claims are about a client that took an id
            s = stream.Stream(1, {1}, 1_000, floor=opened, tag=f"s{n}")
            # feeds.replay.opening_snapshot: the feed from LAG before the opening
            s.owed = opened - LAG
            s.known = [a for m, a in announced if m < opened and a > s.owed]
        else:
            entries = [(m, v) for m, v in ledger.items() if v >= last_id - LAG]
            # Trimmed past this id (a stream that wrote on long after its client left): the
            # id is taken at its word, which may bring activities older than the first
            # stream's opening again (never twice what was received, never a gap).
            word_taken |= ledger.get(TRIM_MEMBER, last_id - LAG) > last_id - LAG
            plan = plan_catch_up(last_id=last_id, ledger=entries, lag_ids=LAG)
            s = stream.Stream(1, {1}, 1_000, floor=plan.floor, tag=f"s{n}")
            s.owed = plan.floor
            s.high, s.sent = last_id, set(plan.skip)
            _note(ledger, s, takeover_notes(s.tag, plan, last_id, start))
            feed = {a for m, a in announced if m < start}
            replay = sorted(a for a in feed if a > plan.floor and a not in plan.skip)
            s.sent |= set(replay)
            data, notes = s.stamp([(a, b"x\n\n") for a in replay])
            _note(ledger, s, notes)
            received += replay
        high = s.high or 0
        for moment, aid in announced:
            if moment >= start and (end is None or moment < end) and aid not in s.sent:
                s.sent.add(aid)
                data, notes = s.stamp([(aid, b"x\n\n")])
                carried = int(data.split(b"\n")[0][4:])
                assert carried >= max(aid, high)  # never lowered
                high = carried
                _note(ledger, s, notes)
                received.append(aid)
        last_id = s.high if s.high is not None else last_id
        if end is not None and last_id is not None:  # written after the drop, never taken
            for moment, aid in announced:
                if end <= moment < end + stale[n // 2 % 3] and aid not in s.sent:
                    if aid < last_id:
                        break  # it would carry the client's id: the drop is noticed first
                    s.sent.add(aid)
                    _note(ledger, s, s.stamp([(aid, b"x\n\n")])[1])
    owed = {a for m, a in announced if m >= opened}
    assert len(received) == len(set(received)), "an activity came twice"
    assert owed <= set(received), f"never received: {sorted(owed - set(received))}"
    assert word_taken or set(received) <= owed


def test_a_reconnect_prefers_its_own_closed_stream_and_never_loses_with_several():
    own, tab = "own", "tab"
    ledger = [
        (f"{own}:f", 50),
        (f"{own}:100", 100),
        (f"{own}:90", 100),  # arrived late, after 100
        (f"{tab}:f", 10),
        (f"{tab}:100", 100),  # the other tab got 100 but not 90 (yet)
    ]
    plan = plan_catch_up(last_id=100, ledger=ledger, open_tags={tab}, lag_ids=LAG)
    assert plan.skip == {90, 100} and plan.floor == 100 - LAG and plan.retire == own
    # Both closed: which was this client's cannot be told; 90 only one of them sent comes again.
    both = plan_catch_up(last_id=100, ledger=ledger, open_tags=set(), lag_ids=LAG)
    assert both.skip == {100} and both.retire is None
    # A retired stream is no candidate; an id no stream sent is taken at its word.
    gone = plan_catch_up(last_id=100, ledger=[*ledger, (f"{own}:r", 200)], open_tags={tab})
    assert gone.retire is None and gone.skip == {100}
    assert plan_catch_up(last_id=70, ledger=ledger) == CatchUpPlan(floor=70)
    # Trimmed above the window (a stream that went on writing long past this client's id):
    # what it sent there is not all known any more; the id is taken at its word.
    trimmed = [*ledger, (TRIM_MEMBER, 100 - LAG + 1)]
    assert plan_catch_up(last_id=100, ledger=trimmed, lag_ids=LAG) == CatchUpPlan(floor=100)
    kept = [*ledger, (TRIM_MEMBER, 100 - LAG)]
    assert plan_catch_up(last_id=100, ledger=kept, open_tags={tab}, lag_ids=LAG) == plan


def test_the_redis_edge_is_where_a_source_may_stop_holding_everything():
    # The page read's rule: a source reaching at or below the floor, or holding the built
    # marker (its whole history), is whole above the floor; one whose oldest id is above the
    # floor, without the marker, may miss what is below that id; a gone feed, everything.
    enc, built = store.encode_id, [store.SENTINEL.encode()]
    assert redis_edge([[9, 8]], [[enc(3)]], floor=5, count=5) is None
    assert redis_edge([[9, 8]], [built], floor=5, count=5) is None  # whole history
    assert redis_edge([[9, 8], [7, 6]], [[enc(3)], [enc(6)]], floor=5, count=5) == 6
    assert redis_edge([[9, 8], [7, 6]], [[enc(3)], built], floor=5, count=5) is None
    assert redis_edge([[]], [[]], floor=5, count=5) == EVERYTHING  # the feed is gone
    assert redis_edge([[9, 8, 7]], [[enc(3)]], floor=5, count=3) == 7  # capped: more below
