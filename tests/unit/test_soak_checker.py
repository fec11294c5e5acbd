"""The soak fails on any fault a user would see: a 5xx other than a 503 with Retry-After during
an injected fault, a request with no answer outside one, a stream event twice, or an activity a
live stream never got (neither live nor replayed by Last-Event-ID)."""

from __future__ import annotations

from bench.soak_check import (
    GRACE,
    FaultWindow,
    Post,
    Request,
    StreamRecord,
    soak_failures,
)

# Redis restarted at t=20 s and answered again at t=22 s: the window is 20 .. 32 s.
WINDOWS = [FaultWindow("feed Redis restarted", started=20.0, recovered=22.0)]
POSTS = [Post(author=1, id="100", sent=5.0), Post(author=1, id="101", sent=6.0)]


def ok(name: str, t: float, status: int = 200, **headers: str) -> Request:
    return Request(name, t, t + 0.01, status, headers)


def clean_requests() -> list[Request]:
    return [ok("feed", 1.0), ok("publish", 5.0, 201), ok("publish", 6.0, 201)]


def clean_stream(events: list[tuple[str, str]] | None = None) -> StreamRecord:
    if events is None:
        events = [("activity", "100"), ("activity", "101")]
    return StreamRecord("u9", frozenset({1}), first_connected=2.0, events=events)


def failures(requests=None, streams=None, posts=POSTS, deleted=frozenset()) -> list[str]:
    return soak_failures(
        clean_requests() if requests is None else requests,
        WINDOWS,
        [clean_stream()] if streams is None else streams,
        list(posts),
        set(deleted),
    )


def test_a_clean_record_passes() -> None:
    assert failures() == []


def test_a_503_with_retry_after_inside_a_fault_window_passes() -> None:
    inside = [
        ok("feed", 21.0, 503, **{"Retry-After": "1"}),
        ok("feed", 20 + GRACE + 1.5, 503, **{"retry-after": "1"}),
    ]
    assert failures(clean_requests() + inside) == []


def test_a_502_fails_even_inside_a_fault_window() -> None:
    got = failures(clean_requests() + [ok("feed", 21.0, 502)])
    assert got == ["feed at t=21.0s: status 502, a 5xx that is not a 503"]


def test_a_503_fails_outside_a_window_or_without_retry_after() -> None:
    got = failures(
        clean_requests() + [ok("feed", 40.0, 503, **{"Retry-After": "1"}), ok("feed", 21.0, 503)]
    )
    assert got == [
        "feed at t=40.0s: status 503, outside any fault window",
        "feed at t=21.0s: status 503, without Retry-After",
    ]


def test_a_connection_error_fails_outside_a_window_only() -> None:
    cut = Request("feed", 10.0, 10.5, None, error="ConnectError")
    during = Request("feed", 19.0, 21.0, None, error="ReadTimeout")  # in flight at the fault
    assert failures(clean_requests() + [cut, during]) == [
        "feed at t=10.0s: ConnectError outside any fault window"
    ]


def test_a_duplicate_stream_event_fails() -> None:
    stream = clean_stream([("activity", "100"), ("activity", "101"), ("activity", "100")])
    assert failures(streams=[stream]) == ["stream u9: activity 100 received 2 times"]


def test_a_gap_fails_and_a_replayed_one_passes() -> None:
    gap = clean_stream([("activity", "100")])
    assert failures(streams=[gap]) == [
        "stream u9: 1 activities never received (not live, not replayed by Last-Event-ID): "
        "101 (sent t=6.0s)"
    ]
    # What a Last-Event-ID reconnect replayed is received all the same: no gap.
    replayed = clean_stream([("activity", "100"), ("activity", "101")])
    assert failures(streams=[replayed]) == []


def test_what_a_stream_need_not_receive() -> None:
    posts = [
        *POSTS,
        Post(author=1, id="99", sent=1.0),  # before the stream connected
        Post(author=2, id="102", sent=7.0),  # not a followee
        Post(author=1, id="103", sent=8.0),  # deleted: may or may not arrive
    ]
    assert failures(posts=posts, deleted={"103"}) == []
    never = StreamRecord("u8", frozenset({1}), first_connected=None, events=[])
    assert failures(streams=[never]) == ["stream u8: never connected"]
