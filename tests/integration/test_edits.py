"""PATCH /api/activities/{id}/ (issue 25, points 4 and 6) on real PostgreSQL and Redis: the
contract (what may change, what is a 400, 403, 404, 405, 429), edited_at in every body, the
new body seen at once by another web process (the production layout) and announced to open
streams, the body cache never going back to an older copy (a read that loaded it before the
edit and caches it late) nor bringing back a deleted activity, the admin's edits, and
verify_feeds."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.utils import timezone

from activities.models import Activity
from activities.selectors import activity_to_dict, encode_body, format_edited_at
from activities.services import activity_edit, next_edited_at
from feeds import store
from feeds.hydrate import hydrate
from feeds.models import FanoutJob
from feeds.services import feed_settings_update
from feedsite.errors import NotFound
from follows.services import follow_create
from tests.conftest import activate, auth_client, make_token, verify_feeds_clean, wait_until
from tests.factories import UserFactory

STAR = {
    "verb": "starred",
    "object_type": "project",
    "object_id": "p-1",
    "object_title": "Project one",
    "target_type": "org",
    "target_id": "o-1",
    "target_title": "Org one",
    "metadata": {"stars": 1, "tags": ["a"]},
    "foreign_id": "star:p-1",
}
EDITED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
IMMUTABLE = (
    "verb",
    "object_type",
    "object_id",
    "target_type",
    "target_id",
    "foreign_id",
    "time",
    "notify",
    "id",
    "actor",
    "edited_at",
)


def publish(user, **extra) -> dict:
    res = auth_client(user).post("/api/activities/", {**STAR, **extra}, format="json")
    assert res.status_code == 201, res.content
    return res.json()


def patch(user, aid: str, body, client=None):
    client = client or auth_client(user)
    return client.patch(
        f"/api/activities/{aid}/", json.dumps(body), content_type="application/json"
    )


def detail(user, aid: str) -> dict:
    res = auth_client(user).get(f"/api/activities/{aid}/")
    assert res.status_code == 200, res.content
    return res.json()


def feed_items(user) -> list[dict]:
    res = auth_client(user).get("/api/feed/", {"limit": 100})
    assert res.status_code == 200, res.content
    return res.json()["items"]


def jobs_done() -> None:
    wait_until(lambda: not FanoutJob.objects.exclude(state="done").exists(), timeout=30)


def cached(aid: str | int) -> dict | None:
    raw = store.get_bodies([int(aid)]).get(int(aid))
    return None if raw is None else json.loads(raw)


def listen(channel, expected: int) -> list[bytes]:
    """The messages a pub/sub subscription hears: until ``expected`` came (5 s at most), and
    half a second more (so that one too many shows)."""
    heard: list[bytes] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        message = channel.get_message(timeout=0.1)
        if message and message["type"] == "message":
            heard.append(message["data"])
            if len(heard) == expected:
                deadline = min(deadline, time.monotonic() + 0.5)
    return heard


# --- the contract -------------------------------------------------------------------------------


@pytest.mark.worker
def test_an_edit_changes_the_titles_and_replaces_the_metadata_and_stamps_edited_at(
    live_worker,
):
    author = UserFactory()
    before = publish(author)
    assert before["edited_at"] is None
    assert list(before)[list(before).index("time") + 1] == "edited_at"  # right after "time"
    res = patch(
        author,
        before["id"],
        {"object_title": "Renamed", "target_title": "", "metadata": {"stars": 2}},
    )
    assert res.status_code == 200, res.content
    after = res.json()
    assert EDITED_AT.match(after["edited_at"]), after["edited_at"]
    changed = {"object_title": "Renamed", "target_title": "", "metadata": {"stars": 2}}
    assert after == {**before, **changed, "edited_at": after["edited_at"]}  # replaced whole
    assert detail(UserFactory(), before["id"]) == after
    row = Activity.objects.get(id=int(before["id"]))
    assert format_edited_at(row.edited_at) == after["edited_at"]
    assert cached(before["id"]) == after  # the body cache holds the new body already
    again = patch(author, before["id"], {"metadata": {}}).json()
    assert again["metadata"] == {} and again["object_title"] == "Renamed"
    assert again["edited_at"] > after["edited_at"]  # strictly later, and comparable as text


@pytest.mark.django_db
@pytest.mark.parametrize("field", IMMUTABLE)
def test_an_immutable_field_present_at_all_is_a_400_naming_it(field):
    author = UserFactory()
    body = publish(author)
    current = {**body, "notify": [], "actor": body["actor"]}[field]  # unchanged values
    res = patch(author, body["id"], {"object_title": "new", field: current})
    assert res.status_code == 400, res.content
    assert field in res.json() and "cannot be changed" in res.json()[field][0]
    assert detail(author, body["id"]) == body  # nothing changed, the title neither


@pytest.mark.django_db
def test_every_immutable_field_present_is_named():
    author = UserFactory()
    body = publish(author)
    res = patch(author, body["id"], {"verb": "liked", "time": body["time"], "colour": "red"})
    assert res.status_code == 400
    assert {"verb", "time"} <= set(res.json()) and "colour" not in res.json()


@pytest.mark.django_db
def test_unknown_keys_are_ignored_and_an_empty_edit_changes_nothing():
    author = UserFactory()
    body = publish(author)
    for nothing in ({}, {"colour": "red", "home": False, "created_at": "2020-01-01T00:00:00Z"}):
        res = patch(author, body["id"], nothing)
        assert res.status_code == 200, res.content
        assert res.json() == body and res.json()["edited_at"] is None
    res = patch(author, body["id"], {"object_title": "x", "colour": "red", "home": False})
    assert res.status_code == 200 and res.json()["object_title"] == "x"
    assert Activity.objects.get(id=int(body["id"])).home is True


@pytest.mark.django_db
def test_put_is_405_and_changes_nothing():
    author = UserFactory()
    body = publish(author)
    res = auth_client(author).put(
        f"/api/activities/{body['id']}/", {"object_title": "x"}, format="json"
    )
    assert res.status_code == 405
    assert detail(author, body["id"]) == body


@pytest.mark.django_db
def test_only_the_actor_or_staff_may_edit_unknown_ids_are_404():
    author, other = UserFactory(), UserFactory()
    staff = UserFactory(is_staff=True)
    body = publish(author)
    res = patch(other, body["id"], {"object_title": "mine now"})
    assert res.status_code == 403 and "actor or staff" in res.json()["detail"]
    anonymous = Client().patch(
        f"/api/activities/{body['id']}/", "{}", content_type="application/json"
    )
    assert anonymous.status_code == 401
    assert detail(author, body["id"]) == body
    res = patch(staff, body["id"], {"object_title": "moderated"})
    assert res.status_code == 200 and res.json()["object_title"] == "moderated"
    assert res.json()["actor"] == body["actor"]  # still the author's
    for unknown in ("1", "999999999999", "abc"):
        res = patch(author, unknown, {"object_title": "x"})
        assert res.status_code == 404, (unknown, res.content)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("edit", "field", "problem"),
    [
        ({"object_title": "x" * 256}, "object_title", "255"),
        ({"target_title": "x" * 256}, "target_title", "255"),
        ({"object_title": None}, "object_title", "null"),
        ({"object_title": {"a": 1}}, "object_title", "valid string"),
        ({"metadata": [1, 2]}, "metadata", "dictionary"),
        ({"metadata": "text"}, "metadata", "dictionary"),
        ({"metadata": {"big": "x" * 4100}}, "metadata", "4096 bytes"),
        ({"metadata": {"n": 2**60}}, "metadata", "2^53"),
    ],
)
def test_edits_are_validated_as_at_publish(edit, field, problem):
    author = UserFactory()
    body = publish(author)
    res = patch(author, body["id"], edit)
    assert res.status_code == 400, res.content
    assert field in res.json() and problem in json.dumps(res.json()), res.json()
    assert detail(author, body["id"]) == body


@pytest.mark.django_db
def test_a_body_that_is_no_object_is_a_400():
    author = UserFactory()
    body = publish(author)
    res = patch(author, body["id"], [{"object_title": "x"}])
    assert res.status_code == 400
    assert detail(author, body["id"]) == body


@pytest.mark.django_db
def test_edits_count_against_the_write_throttle(settings):
    settings.FEEDSITE_THROTTLE_RATES = {**settings.FEEDSITE_THROTTLE_RATES, "write": "3/min"}
    author = UserFactory()
    client = auth_client(author)
    body = publish(author)  # one write
    assert patch(author, body["id"], {"object_title": "a"}, client).status_code == 200
    assert patch(author, body["id"], {"object_title": "b"}, client).status_code == 200
    res = patch(author, body["id"], {"object_title": "c"}, client)
    assert res.status_code == 429 and int(res["Retry-After"]) > 0
    assert detail(author, body["id"])["object_title"] == "b"


def test_edited_at_always_moves_forward():
    now = timezone.now()
    assert next_edited_at(now=now, previous=None) == now
    assert next_edited_at(now=now, previous=now - timedelta(seconds=1)) == now
    # A server whose clock is behind the previous edit's still stamps a later one.
    assert next_edited_at(now=now, previous=now) == now + timedelta(microseconds=1)
    later = now + timedelta(minutes=5)
    assert next_edited_at(now=now, previous=later) == later + timedelta(microseconds=1)


# --- every reader sees the edit ------------------------------------------------------------------


@pytest.mark.worker
def test_an_edit_is_seen_at_once_by_another_web_process_and_announced(live_worker, served):
    feed_settings_update(celebrity_threshold=100)
    author, reader = UserFactory(), UserFactory()
    activate(author, reader)
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    body = publish(author)
    aid = body["id"]
    wait_until(lambda: FanoutJob.objects.filter(activity_id=int(aid), state="done").exists())
    key = make_token(reader)
    headers = {"Authorization": f"Token {key}"}

    def elsewhere() -> tuple[dict, dict]:
        """The feed and the detail through the production layout: other processes."""
        feed = httpx.get(f"{served}/api/feed/", headers=headers, timeout=10)
        one = httpx.get(f"{served}/api/activities/{aid}/", headers=headers, timeout=10)
        assert feed.status_code == one.status_code == 200, (feed.text, one.text)
        return feed.json()["items"][0], one.json()

    for _ in range(4):  # both server workers have read (and cached) the old body
        item, one = elsewhere()
        assert item["object_title"] == one["object_title"] == "Project one"
    channel = store.client().pubsub()
    channel.subscribe(store.live_channel(author.pk))
    try:
        res = patch(author, aid, {"object_title": "Edited in this process"})  # this process
        assert res.status_code == 200
        for _ in range(4):
            item, one = elsewhere()
            assert item["id"] == aid and item["object_title"] == "Edited in this process"
            assert item["edited_at"] == one["edited_at"] == res.json()["edited_at"]
            assert one == res.json()
        # Edited through the production layout, read here.
        res = httpx.patch(
            f"{served}/api/activities/{aid}/",
            json={"metadata": {"edited": "there"}},
            headers={"Authorization": f"Token {make_token(author)}"},
            timeout=10,
        )
        assert res.status_code == 200, res.text
        mine = feed_items(reader)[0]
        assert mine["metadata"] == {"edited": "there"} and mine["edited_at"] > item["edited_at"]
        assert detail(reader, aid) == res.json()
        # Each edit told the author's channel once ("u<id>": open streams send event: update).
        assert listen(channel, 2) == [f"u{aid}".encode()] * 2
    finally:
        channel.close()
    # An edit is not fanned out again: still one publish job, the feeds hold the id once.
    assert FanoutJob.objects.filter(activity_id=int(aid)).count() == 1
    assert store.feed_ids(reader.pk).count(int(aid)) == 1


@pytest.mark.worker
def test_an_open_stream_gets_the_edit_as_event_update(live_worker, served):
    from tests.integration.test_stream import Stream

    author, reader = UserFactory(), UserFactory()
    activate(author, reader)
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    stream = Stream(served, reader)
    try:
        aid = publish(author)["id"]
        assert stream.next_activity()["id"] == aid
        edited = patch(author, aid, {"object_title": "On the stream"}).json()
        stream.wait_for(lambda line: line == "event: update")
        item = stream.next_activity()
        assert item["id"] == aid and item["activity_ids"] == [aid]
        assert item["object_title"] == "On the stream"
        assert item["edited_at"] == edited["edited_at"]
    finally:
        stream.close()


@pytest.mark.worker
def test_an_edit_shows_in_notifications_and_on_the_authors_page(live_worker):
    author, fan = UserFactory(), UserFactory()
    body = publish(author, notify=[fan.pk])
    wait_until(lambda: not FanoutJob.objects.exclude(state="done").exists())
    notes = auth_client(fan).get("/api/notifications/").json()["items"]
    assert notes[0]["id"] == body["id"] and notes[0]["edited_at"] is None
    edited = patch(author, body["id"], {"target_title": "Org renamed"}).json()
    notes = auth_client(fan).get("/api/notifications/").json()["items"]
    assert notes[0]["target_title"] == "Org renamed"
    assert notes[0]["edited_at"] == edited["edited_at"]
    page = auth_client(fan).get(f"/api/users/{author.pk}/activities/").json()["items"]
    assert page == [edited]


# --- races of the body cache ---------------------------------------------------------------------


@pytest.mark.worker
def test_a_read_that_caches_an_old_body_late_never_replaces_the_edit(live_worker):
    author = UserFactory()
    activate(author)
    body = publish(author)
    aid = int(body["id"])
    jobs_done()  # (fan-out cached the body too)
    # A reader loads the body from PostgreSQL (a cache miss) ... and is slow to cache it.
    store.delete_body(aid)
    old = encode_body(activity_to_dict(Activity.objects.select_related("actor").get(id=aid)))
    edited = patch(author, body["id"], {"object_title": "new"}).json()
    store.set_bodies({aid: old})  # the late write, as hydrate makes it
    store.set_bodies({aid: old}, best_effort=True)
    assert cached(aid) == edited
    assert hydrate([aid])[aid] == edited
    assert detail(author, body["id"]) == edited
    # Nor does a copy of an earlier edit: the newest edited_at wins.
    first = encode_body(activity_to_dict(Activity.objects.select_related("actor").get(id=aid)))
    newer = patch(author, body["id"], {"object_title": "newer"}).json()
    store.set_bodies({aid: first})
    assert store.replace_body(aid, first) is False  # an edit's own late write too
    assert cached(aid) == newer


@pytest.mark.worker
def test_concurrent_refills_never_leave_a_body_older_than_an_answered_edit(live_worker):
    """A reader thread evicts and refills the body from PostgreSQL as fast as it can while
    edits commit: after each edit's answer, every read shows that edit or a later one."""
    author = UserFactory()
    body = publish(author)
    aid = int(body["id"])
    stop = threading.Event()
    errors: list[BaseException] = []

    def refill() -> None:
        try:
            while not stop.is_set():
                store.delete_body(aid)
                hydrate([aid])  # loads from PostgreSQL, caches (compare-and-set)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    readers = [threading.Thread(target=refill) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(30):
            answer = activity_edit(activity_id=aid, changes={"object_title": f"v{i}"})
            stamp = format_edited_at(answer.edited_at)
            seen = hydrate([aid])[aid]
            assert seen["edited_at"] >= stamp, (i, seen, stamp)
            now = cached(aid)
            assert now is None or now["edited_at"] >= stamp, (i, now, stamp)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors
    store.delete_body(aid)
    hydrate([aid])
    assert cached(aid)["object_title"] == "v29"


def _race_edit_and_delete(author, aid: str) -> tuple[int, int]:
    """A PATCH and a DELETE of the same activity at once, on two connections."""
    go = threading.Barrier(2)
    out: dict[str, int] = {}
    editor, deleter = auth_client(author), auth_client(author)

    def run(name: str, call) -> None:
        try:
            go.wait()
            out[name] = call().status_code
        finally:
            connection.close()

    calls = {
        "patch": lambda: patch(author, aid, {"object_title": "edited while deleted"}, editor),
        "delete": lambda: deleter.delete(f"/api/activities/{aid}/"),
    }
    threads = [threading.Thread(target=run, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out["patch"], out["delete"]


@pytest.mark.worker
def test_an_edit_racing_a_delete_never_brings_it_back(live_worker):
    author, reader = UserFactory(), UserFactory()
    activate(author, reader)
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    for i in range(8):
        body = publish(author, foreign_id=f"race-{i}")
        aid = int(body["id"])
        store.add_to_feed(reader.pk, [aid], 100)  # in the feed now, whatever fan-out is at
        assert detail(reader, body["id"])["id"] == body["id"]  # body cached
        edit_status, delete_status = _race_edit_and_delete(author, body["id"])
        assert delete_status == 204 and edit_status in (200, 404), (edit_status, delete_status)
        assert auth_client(reader).get(f"/api/activities/{aid}/").status_code == 404
        assert cached(aid) is None and hydrate([aid]) == {}
        assert all(item["id"] != body["id"] for item in feed_items(reader))
        # Whatever was in flight and lands now: the tombstone stays.
        late = encode_body(
            {**body, "object_title": "late", "edited_at": "2999-01-01T00:00:00.000000Z"}
        )
        assert store.replace_body(aid, late) is False
        store.set_bodies({aid: late})
        assert store.get_bodies([aid], tombstones=True) == {aid: store.BODY_TOMBSTONE}
        assert all(item["id"] != body["id"] for item in feed_items(reader))


@pytest.mark.worker
def test_an_edit_of_a_deleted_activity_is_404(live_worker):
    author = UserFactory()
    body = publish(author)
    assert auth_client(author).delete(f"/api/activities/{body['id']}/").status_code == 204
    assert patch(author, body["id"], {"object_title": "x"}).status_code == 404
    with pytest.raises(NotFound):
        activity_edit(activity_id=int(body["id"]), changes={"object_title": "x"})


# --- the admin -----------------------------------------------------------------------------------


@pytest.fixture
def admin_browser(live_worker) -> Client:
    admin = get_user_model().objects.create_superuser("root", password="pw-for-tests-only")
    browser = Client()
    browser.force_login(admin)
    return browser


@pytest.mark.worker
def test_an_admin_edit_is_an_edit_and_other_fields_are_read_only(admin_browser):
    author = UserFactory()
    body = publish(author)
    hydrate([int(body["id"])])  # a read cached the body
    assert cached(body["id"]) == body
    page = admin_browser.get(f"/admin/activities/activity/{body['id']}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    assert set(form.fields) == {"object_title", "target_title", "metadata"}
    channel = store.client().pubsub()
    channel.subscribe(store.live_channel(author.pk))
    try:
        res = admin_browser.post(
            f"/admin/activities/activity/{body['id']}/change/",
            {
                "object_title": "Fixed by staff",
                "target_title": body["target_title"],
                "metadata": json.dumps({"moderated": True}),
                "verb": "hacked",  # read-only: ignored
                "object_id": "elsewhere",
            },
        )
        assert res.status_code == 302, res.content[:2000]
        row = Activity.objects.get(id=int(body["id"]))
        assert (row.verb, row.object_id, row.object_title) == ("starred", "p-1", "Fixed by staff")
        assert row.metadata == {"moderated": True} and row.edited_at is not None
        now = detail(UserFactory(), body["id"])
        assert cached(body["id"]) == now and now["edited_at"] == format_edited_at(row.edited_at)
        assert listen(channel, 1) == [f"u{body['id']}".encode()]
    finally:
        channel.close()
    bad = admin_browser.post(
        f"/admin/activities/activity/{body['id']}/change/",
        {"object_title": "x", "target_title": "", "metadata": json.dumps([1])},
    )
    assert bad.status_code == 200 and "metadata must be a JSON object" in bad.content.decode()
    assert Activity.objects.get(id=int(body["id"])).object_title == "Fixed by staff"


# --- verify_feeds --------------------------------------------------------------------------------


@pytest.mark.worker
def test_edited_bodies_are_no_wrong_feeds_for_verify_feeds(live_worker):
    feed_settings_update(celebrity_threshold=3, fanout_batch_size=2)
    author, star, fan = UserFactory(), UserFactory(), UserFactory()
    activate(author, star, fan)
    follow_create(follower_id=fan.pk, followee_id=author.pk)
    for other in (fan, UserFactory(), UserFactory()):
        follow_create(follower_id=other.pk, followee_id=star.pk)  # star: a pull author
    pushed = publish(author, notify=[fan.pk])
    pulled = publish(star, verb="liked", object_id="p-2", foreign_id="pulled")
    wait_until(lambda: not FanoutJob.objects.exclude(state="done").exists())
    assert auth_client(fan).get("/api/notifications/").status_code == 200  # built
    for item in (pushed, pulled):
        owner = author if item is pushed else star
        assert patch(owner, item["id"], {"object_title": "edited"}).status_code == 200
    items = feed_items(fan)
    assert {i["id"]: i["object_title"] for i in items} == {
        pushed["id"]: "edited",
        pulled["id"]: "edited",
    }
    out = verify_feeds_clean()
    assert "wrong=0" in out
