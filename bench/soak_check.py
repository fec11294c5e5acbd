"""The soak's verdict, as pure functions of what it recorded: every request (status, headers,
time), every injected fault's window, every event each live stream received. No I/O, no clock:
a unit test feeds it records and reads the failures back.

The rules (issue 23):
- Any 5xx fails, except a 503 carrying ``Retry-After`` inside a fault's window: the service
  saying "unavailable, retry" while a part of it is down is the promised behaviour.
- A request with no answer (connection error, timeout), or a stream cut, fails outside a window.
- A fault's window runs from its injection until GRACE seconds after the faulted component
  answers again; a request counts as inside when its flight overlaps the window.
- Every live stream receives each activity it should exactly once: no duplicate, and no gap
  (a reconnect with ``Last-Event-ID`` must have replayed what the cut stream missed).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

GRACE = 10.0  # seconds after the faulted component answers again


@dataclass(frozen=True)
class Request:
    """One request as the client saw it: ``status`` None when no answer came (``error`` says
    why, e.g. ConnectTimeout, or StreamCut for an open stream that ended)."""

    name: str
    started: float
    ended: float
    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class FaultWindow:
    """An injected fault: from ``started`` until ``recovered`` (the component answers) + GRACE."""

    what: str
    started: float
    recovered: float

    @property
    def ends(self) -> float:
        return self.recovered + GRACE

    def overlaps(self, started: float, ended: float) -> bool:
        """Whether a request in flight from ``started`` to ``ended`` met this window."""
        return started <= self.ends and ended >= self.started


@dataclass(frozen=True)
class Post:
    """An activity the load published (201): its author, id and when the POST was sent."""

    author: int
    id: str
    sent: float


@dataclass(frozen=True)
class StreamRecord:
    """One live stream (one user, reconnecting with ``Last-Event-ID``): the authors it hears
    (fixed for the soak), when it first connected, and the events received, in order."""

    name: str
    followees: frozenset[int]
    first_connected: float | None
    events: list[tuple[str, str]]  # (event kind, id), e.g. ("activity", "123")


def _in_window(req: Request, windows: Iterable[FaultWindow]) -> bool:
    return any(w.overlaps(req.started, req.ended) for w in windows)


def _has_retry_after(headers: Mapping[str, str]) -> bool:
    return any(k.lower() == "retry-after" for k in headers)


def request_failures(requests: Iterable[Request], windows: list[FaultWindow]) -> list[str]:
    """Why each failing request fails (empty: all fine)."""
    failures = []
    for req in requests:
        where = f"{req.name} at t={req.started:.1f}s"
        inside = _in_window(req, windows)
        if req.status is None:
            if not inside:
                failures.append(f"{where}: {req.error or 'no answer'} outside any fault window")
        elif req.status >= 500:
            if req.status == 503 and inside and _has_retry_after(req.headers):
                continue
            why = (
                "without Retry-After"
                if req.status == 503 and inside
                else "outside any fault window"
                if req.status == 503
                else "a 5xx that is not a 503"
            )
            failures.append(f"{where}: status {req.status}, {why}")
    return failures


def expected_activities(stream: StreamRecord, posts: Iterable[Post], deleted: set[str]) -> set[str]:
    """What the stream must receive: every activity its followees published after it first
    connected (its subscriptions were in place), less the ones deleted (a delete may win the
    race with the fan-out; those may arrive once or not at all)."""
    if stream.first_connected is None:
        return set()
    return {
        p.id
        for p in posts
        if p.author in stream.followees and p.sent >= stream.first_connected and p.id not in deleted
    }


def stream_failures(
    streams: Iterable[StreamRecord], posts: list[Post], deleted: set[str]
) -> list[str]:
    """Duplicates (any event kind) and gaps (an expected activity never received)."""
    failures = []
    for stream in streams:
        if stream.first_connected is None:
            failures.append(f"stream {stream.name}: never connected")
            continue
        counts = collections.Counter(stream.events)
        for (kind, eid), n in sorted(counts.items()):
            if n > 1:
                failures.append(f"stream {stream.name}: {kind} {eid} received {n} times")
        received = {eid for kind, eid in counts if kind == "activity"}
        missing = sorted(expected_activities(stream, posts, deleted) - received, key=int)
        if missing:
            sent = {p.id: p.sent for p in posts}
            shown = ", ".join(f"{m} (sent t={sent[m]:.1f}s)" for m in missing[:10]) + (
                " ..." if len(missing) > 10 else ""
            )
            failures.append(
                f"stream {stream.name}: {len(missing)} activities never received "
                f"(not live, not replayed by Last-Event-ID): {shown}"
            )
    return failures


def soak_failures(
    requests: Iterable[Request],
    windows: list[FaultWindow],
    streams: Iterable[StreamRecord],
    posts: list[Post],
    deleted: set[str],
) -> list[str]:
    """Every reason the soak fails, requests first; empty when it passes."""
    return request_failures(requests, windows) + stream_failures(streams, posts, deleted)
