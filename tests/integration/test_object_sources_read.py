"""Reading feeds with object sources (issue 27, points 5 and 7): the pull objects' timelines ride
in the same one-round-trip script as the pull authors' (store.read_warm), the pipelined and
gathered reads merge them alike, lost object timelines are rebuilt by the read, and pages past a
trimmed object timeline go on in PostgreSQL, each activity once. Real PostgreSQL and Redis."""

from __future__ import annotations

import random

import orjson
import pytest
from redis.connection import AbstractConnection
from rest_framework.test import APIClient

from activities.services import activity_publish
from feeds import store
from feeds.read import MAX_SCRIPT_SOURCES
from feeds.services import feed_settings_update
from feeds.store import objects as object_store
from feeds.store.keys import object_digest, object_timeline_key
from follows.services import follow_create, object_follow_create
from tests.conftest import activate, auth_client, make_token
from tests.factories import UserFactory

one_redis = pytest.mark.skipif(
    store.is_cluster(), reason="the page script runs on one Redis (a cluster gathers)"
)


def post(actor, obj, target=None, n=[0]) -> int:  # noqa: B006 - a counter: verbs never repeat
    n[0] += 1
    data = {"verb": f"v{n[0]}", "object_type": obj[0], "object_id": obj[1]}
    if target:
        data |= {"target_type": target[0], "target_id": target[1]}
    return activity_publish(actor_id=actor.pk, data=data)[0].id


def page_through(user, limit: int) -> list[int]:
    client, seen, cursor = auth_client(user), [], None
    for _ in range(300):
        res = client.get("/api/feed/", {"limit": limit, **({"cursor": cursor} if cursor else {})})
        assert res.status_code == 200, res.content
        assert not res.json().get("partial")
        seen += [int(a) for item in res.json()["items"] for a in item["activity_ids"]]
        cursor = res.json()["next_cursor"]
        if cursor is None:
            assert len(seen) == len(set(seen)), seen
            return seen
    raise AssertionError("paging did not end")


@pytest.mark.django_db
@one_redis
def test_warm_read_with_object_sources_is_one_round_trip_and_no_sql(
    settings, monkeypatch, django_assert_num_queries
):
    settings.FEEDSITE_SETTINGS_LOCAL_SECONDS = 60  # as in service: settings cached in process
    star, author, reader, other = (UserFactory() for _ in range(4))
    big, small_obj = ("channel", "general"), ("repo", "a/b")
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    for user in (reader, other):
        follow_create(follower_id=user.pk, followee_id=star.pk)  # 2 followers: a pull author
        object_follow_create(user_id=user.pk, object_type=big[0], object_id=big[1])  # pull
    object_follow_create(user_id=reader.pk, object_type=small_obj[0], object_id=small_obj[1])
    feed_settings_update(celebrity_threshold=2)
    stranger = UserFactory()
    expected = set()
    for i in range(8):
        expected.add(post(star, ("t", f"s{i}")))
        expected.add(post(author, ("t", f"a{i}")))
        expected.add(post(stranger, big))  # only through the pull object
        expected.add(post(stranger, ("t", f"x{i}"), target=small_obj))  # the push object
        post(stranger, ("t", f"nothing{i}"))  # reaches the reader through nothing
    activate(reader, author, star)  # the reader's feed holds the push sources' activities
    key = make_token(reader)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    cold = client.get("/api/feed/", {"limit": 40})
    assert cold.status_code == 200
    assert {int(a) for i in cold.json()["items"] for a in i["activity_ids"]} == expected
    assert object_store.object_timeline_exists(big)  # rebuilt by the cold read
    store.flush_buffered()
    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    def counting(self, command, *args, **kwargs):
        sent.append(command)
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    with django_assert_num_queries(0):
        warm = client.get("/api/feed/", {"limit": 40})
    assert warm.json() == cold.json()
    assert len(sent) == 1  # token, throttle, pull sources (authors and objects), the page
    sent.clear()
    with django_assert_num_queries(0):
        first = client.get("/api/feed/", {"limit": 10})
        second = client.get("/api/feed/", {"limit": 10, "cursor": first.json()["next_cursor"]})
    assert len(sent) == 2
    ids = [int(a) for r in (first, second) for i in r.json()["items"] for a in i["activity_ids"]]
    assert ids == sorted(expected, reverse=True)[:20]


@pytest.mark.parametrize("seed", range(12))
@one_redis
def test_read_warm_names_object_timelines_as_feeds_read_does(seed):
    rng = random.Random(seed)
    user, digest, threshold = 9000 + seed, f"{seed + 100:040x}", 3
    authors = rng.sample(range(1, 5000), rng.randrange(0, 4))
    objects = [("t", f"o{seed}-{n}/x") for n in range(rng.randrange(0, 4))]
    digests = [object_digest(*o) for o in objects]
    keys = [
        store.feed_key(user),
        *(store.timeline_key(a) for a in authors),
        *(object_timeline_key(*o) for o in objects),
    ]
    shared = [rng.randrange(1, 2**53) for _ in range(5)]  # in several sources: merged once
    for key in keys:
        ids = {rng.randrange(1, 2**53) for _ in range(rng.randrange(1, 30))} | set(shared)
        store.client().zadd(key, {store.encode_id(i): 0 for i in ids})
        store.set_bodies({i: b'{"id":"%d"}' % i for i in ids})
    version = int(store.client().get(store.pull_version_key()) or 0)
    store.set_pull_authors(user, f"{threshold}.{version}", authors, 60, digests)
    store.token_set(digest, orjson.dumps({"id": user, "username": "u", "is_active": True}), 60)
    plan = {"max_id": None, "count": 30, "nbodies": 60, "shown": None}
    read = store.read_warm(
        digest=digest,
        user_id=user,
        throttle=("feed", digest, 60),
        hit_limit=100,
        threshold=threshold,
        max_sources=MAX_SCRIPT_SOURCES,
        mark_ttl=3600,
        **plan,
    )
    assert read.keys == keys
    expected = store.read_page(keys, **plan)
    pipelined = store.read_page_pipelined(keys, **plan)
    assert read.page.ids == expected.ids == pipelined.ids
    assert read.page.ids == sorted(set(read.page.ids), reverse=True)
    assert set(shared) <= set(read.page.ids) or read.page.floor is not None
    # A list cached by an earlier version (no objects part) is not current: no page.
    store.client().set(
        store.pull_authors_key(user), f"{threshold}.{version}:" + ",".join(map(str, authors))
    )
    assert (
        store.read_warm(
            digest=digest,
            user_id=user,
            throttle=("feed", digest, 60),
            hit_limit=100,
            threshold=threshold,
            max_sources=MAX_SCRIPT_SOURCES,
            mark_ttl=3600,
            **plan,
        ).page
        is None
    )


@pytest.mark.django_db
@pytest.mark.parametrize("objects", [2, MAX_SCRIPT_SOURCES + 2], ids=["script", "pipelined"])
def test_lost_object_timelines_are_rebuilt_and_pages_go_past_them_to_postgresql(objects):
    """Pull objects whose timelines hold only the newest CAP: the read merges them with the
    feed, pages on in PostgreSQL past the trimmed tails, and rebuilds a lost timeline."""
    cap = 4
    feed_settings_update(celebrity_threshold=1, feed_max_length=cap, aggregation_window_seconds=1)
    reader, stranger, friend = UserFactory(), UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=friend.pk)  # 1 follower: pull too
    watched = [("topic", f"t{n}") for n in range(objects)]
    for obj in watched:
        object_follow_create(user_id=reader.pk, object_type=obj[0], object_id=obj[1])
    expected = []
    for i in range(3 * cap):
        for obj in watched[:2]:
            expected.append(post(stranger, obj))
        expected.append(post(friend, ("t", f"f{i}")))
    expected.append(post(stranger, ("t", "x"), target=watched[-1]))
    post(stranger, ("t", "unwatched"))
    activate(reader, friend)
    store.client().delete(*(object_timeline_key(*o) for o in watched))  # never built / lost
    for limit in (3, 7):
        assert page_through(reader, limit) == sorted(expected, reverse=True)
    assert len(object_store.object_timeline_ids(watched[0])) == cap  # rebuilt, capped
