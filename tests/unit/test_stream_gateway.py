"""The stream's pieces that need no server: the per-stream queue and the process limit."""

from __future__ import annotations

import asyncio
import json

from feeds import stream


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

    asyncio.run(stream.application(scope, receive, send))
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
