"""The page read (store.read_page, a Lua script; on Redis Cluster store.read_page_gathered,
scatter-gather) and its pipelined twin for readers with many sources (store.read_page_pipelined)
return the same page, on real Redis."""

from __future__ import annotations

import random

import pytest
import redis

from feeds import store
from feeds.read import MAX_SCRIPT_SOURCES


def _sources(rng: random.Random, n: int) -> list[str]:
    keys = []
    pool = [rng.randrange(1, 2**50) for _ in range(60)]  # shared ids: duplicates across sources
    for s in range(n):
        key = store.timeline_key(10_000 + s)
        ids = set(rng.sample(pool, rng.randrange(0, 30)))
        ids |= {rng.randrange(1, 2**53) for _ in range(rng.randrange(0, 40))}
        if ids:
            store.client().zadd(key, {store.encode_id(i): 0 for i in ids})
        if s == 0:
            store.client().zadd(key, {store.SENTINEL: 0})  # a built feed's marker: never read
        keys.append(key)
    return keys


@pytest.mark.parametrize("seed", range(40))
def test_script_and_pipelined_reads_agree(seed):
    rng = random.Random(seed)
    keys = _sources(rng, rng.randrange(1, 12))
    some = [store.decode_id(m) for k in keys for m in store.client().zrange(k, 1, 3) if m != b"0"]
    store.set_bodies({i: b'{"id":"%d"}' % i for i in some})
    max_id = rng.choice([None, *some]) if some else None
    count = rng.randrange(1, 25)
    shown = None
    if some and rng.random() < 0.5:
        hi = rng.choice(some)
        shown = (hi, max(1, hi - rng.randrange(1, 2**52)))
    args = {"max_id": max_id, "count": count, "nbodies": count * 2, "shown": shown}
    first = store.read_page_gathered if store.is_cluster() else store.read_page
    script, pipelined = first(keys, **args), store.read_page_pipelined(keys, **args)
    assert not getattr(script, "partial", False)
    assert script.ids == pipelined.ids
    assert script.floor == pipelined.floor
    assert script.shown == pipelined.shown
    assert 0 not in script.ids and script.ids == sorted(set(script.ids), reverse=True)
    assert {i: b for i, b in script.bodies.items() if b} == {
        i: b for i, b in pipelined.bodies.items() if b
    }


@pytest.mark.django_db
def test_a_reader_of_many_celebrities_pages_through_all_of_them():
    from activities.services import activity_publish
    from feeds.services import feed_settings_update
    from follows.services import follow_create
    from tests.conftest import activate, auth_client
    from tests.factories import UserFactory

    reader = UserFactory()
    stars = [UserFactory() for _ in range(MAX_SCRIPT_SOURCES + 3)]
    for star in stars:
        follow_create(follower_id=reader.pk, followee_id=star.pk)
    feed_settings_update(celebrity_threshold=1, aggregation_window_seconds=1)  # all pull
    ids = [
        activity_publish(
            actor_id=star.pk, data={"verb": "v", "object_type": "t", "object_id": f"{star.pk}-{i}"}
        )[0].id
        for i in range(3)
        for star in stars
    ]
    activate(reader, *stars)
    client, seen, cursor = auth_client(reader), [], None
    for _ in range(20):
        res = client.get("/api/feed/", {"limit": 4, **({"cursor": cursor} if cursor else {})})
        assert res.status_code == 200
        seen += [int(a) for item in res.json()["items"] for a in item["activity_ids"]]
        cursor = res.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)


one_redis = pytest.mark.skipif(
    store.is_cluster(), reason="the page script runs on one Redis (a cluster gathers)"
)


@one_redis
def test_scripts_survive_a_server_that_lost_its_script_cache():
    key = store.feed_key(424242)
    store.write_feed(424242, [5, 7], cap=10, ttl=0)
    assert store.read_page([key], max_id=None, count=5, nbodies=5).ids == [7, 5]
    store.client().script_flush()  # as after a Redis restart
    assert store.read_page([key], max_id=None, count=5, nbodies=5).ids == [7, 5]
    store.client().script_flush()
    assert store.push_to_feeds([424242], [9], cap=10, author_id=1)[0] == 1
    assert store.read_page([key], max_id=None, count=5, nbodies=5).ids == [9, 7, 5]


@one_redis
def test_a_read_survives_connections_the_server_dropped():
    key = store.feed_key(424243)
    store.write_feed(424243, [5, 7], cap=10, ttl=0)
    assert store.read_page([key], max_id=None, count=5, nbodies=5).ids == [7, 5]
    # As after a Redis restart or an idle timeout: every pooled connection is dead.
    store.client().client_kill_filter(_type="normal", skipme=False)
    assert store.read_page([key], max_id=None, count=5, nbodies=5).ids == [7, 5]
    pre = store.read_prelude(digest="0" * 40, user_id=424243, throttle=("feed", "t", 60))
    assert (pre.token, pre.hits) == (None, 1)


@one_redis
def test_an_error_reply_is_raised_and_leaves_the_connection_clean():
    store.client().set(store.feed_key(424244), "not a sorted set")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        store.read_page([store.feed_key(424244)], max_id=None, count=5, nbodies=5)
    store.write_feed(424245, [3], cap=10, ttl=0)
    # The next round on the same pooled connection reads its own replies, not leftovers.
    assert store.read_page([store.feed_key(424245)], max_id=None, count=5, nbodies=5).ids == [3]
