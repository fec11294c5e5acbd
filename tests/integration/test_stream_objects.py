"""Streams carry an activity that reaches the reader through a followed object (its object or
its target) as one `event: activity`, whatever else brings it; an object followed or unfollowed
while the stream is open is heard (or no longer) at once; an author the reader hides never shows
through an object. On the production layout with the real worker (issue 27, point 8)."""

from __future__ import annotations

import json
import queue
import time

import pytest

from follows.services import follow_create, mute_create, object_follow_create, object_follow_delete
from tests.conftest import auth_client
from tests.factories import UserFactory
from tests.integration.test_stream import Stream

pytestmark = pytest.mark.worker


def publish(user, object_id: str, target_id: str | None = None) -> str:
    body = {"verb": "commented", "object_type": "issue", "object_id": object_id}
    if target_id is not None:
        body |= {"target_type": "repo", "target_id": target_id}
    res = auth_client(user).post("/api/activities/", body, format="json")
    assert res.status_code == 201, res.content
    return res.json()["id"]


def activities(stream: Stream, seconds: float) -> list[str]:
    """The ids of the activity events the stream carries within ``seconds``."""
    ids, kind = [], "activity"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            line = stream.lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            if kind == "activity":
                ids.append(json.loads(line[len("data: ") :])["id"])
            kind = "activity"
    return ids


def test_an_object_or_target_followed_brings_its_activities_once(live_worker, served):
    author, reader, both = UserFactory(), UserFactory(), UserFactory()
    object_follow_create(user_id=reader.pk, object_type="repo", object_id="ana/x")
    # ``both`` hears the author, the object and the target: still one event.
    follow_create(follower_id=both.pk, followee_id=author.pk)
    object_follow_create(user_id=both.pk, object_type="repo", object_id="ana/x")
    object_follow_create(user_id=both.pk, object_type="issue", object_id="ana/x#1")
    reader_stream, both_stream = Stream(served, reader), Stream(served, both)
    try:
        about_target = publish(author, "ana/x#1", target_id="ana/x")
        elsewhere = publish(author, "bo/y#2", target_id="bo/y")
        assert activities(reader_stream, 4) == [about_target]
        assert activities(both_stream, 1) == [about_target, elsewhere]
    finally:
        reader_stream.close()
        both_stream.close()


def test_an_object_followed_or_unfollowed_while_streaming_is_heard_or_dropped(live_worker, served):
    author, reader = UserFactory(), UserFactory()
    stream = Stream(served, reader)
    try:
        object_follow_create(user_id=reader.pk, object_type="repo", object_id="cy/z")
        time.sleep(0.5)  # the gateway takes the follow from the user's channel
        heard = publish(author, "cy/z#1", target_id="cy/z")
        assert activities(stream, 4) == [heard]
        object_follow_delete(user_id=reader.pk, object_type="repo", object_id="cy/z")
        time.sleep(0.5)
        publish(author, "cy/z#2", target_id="cy/z")
        assert activities(stream, 3) == []
    finally:
        stream.close()


def test_a_hidden_author_never_shows_through_an_object(live_worker, served):
    author, other, reader = UserFactory(), UserFactory(), UserFactory()
    object_follow_create(user_id=reader.pk, object_type="repo", object_id="dee/w")
    stream = Stream(served, reader)
    try:
        mute_create(muter_id=reader.pk, muted_id=author.pk)
        time.sleep(0.5)  # the stream takes its new hidden list
        publish(author, "dee/w#1", target_id="dee/w")
        shown = publish(other, "dee/w#2", target_id="dee/w")
        assert activities(stream, 4) == [shown]
    finally:
        stream.close()
