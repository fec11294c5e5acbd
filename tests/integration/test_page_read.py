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
    some = [
        store.decode_id(m)
        for k in keys
        for m in store.client().zrange(k, 1, 3)
        if m != store.SENTINEL.encode()
    ]
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
    assert script.edge == pipelined.edge  # where the history turns to PostgreSQL
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


@pytest.mark.skipif(store.is_cluster(), reason="one Redis only: a cluster keeps two rounds")
@pytest.mark.parametrize("seed", range(10))
def test_warm_read_pages_as_read_page_does_once_redis_confirms_the_claim(seed):
    """store.read_warm reads the page in its one round trip only when Redis finds the token
    entry confirming the claimed user, the throttle admitting the read and the pull-author list
    current; the page is then read_page's, over the keys feeds.read would name."""
    import orjson

    rng = random.Random(seed)
    user, digest, threshold = 4242 + seed, f"{seed:040x}", 3
    authors = rng.sample(range(1, 5000), rng.randrange(0, MAX_SCRIPT_SOURCES))
    keys = [store.feed_key(user), *(store.timeline_key(a) for a in authors)]
    for key in keys:
        ids = {rng.randrange(1, 2**53) for _ in range(rng.randrange(1, 40))}
        store.client().zadd(key, {store.encode_id(i): 0 for i in ids})
        store.set_bodies({i: b'{"id":"%d"}' % i for i in ids})

    def version() -> int:
        return int(store.client().get(store.pull_version_key()) or 0)

    store.set_pull_authors(user, f"{threshold}.{version()}", authors, 60)
    entry = {"id": user, "username": "u", "is_active": True, "is_staff": False}
    store.token_set(digest, orjson.dumps(entry), 60)
    plan = {"max_id": None, "count": 30, "nbodies": 60, "shown": None}

    def warm(hit_limit=100, user_id=user, max_sources=MAX_SCRIPT_SOURCES):
        return store.read_warm(
            digest=digest,
            user_id=user_id,
            throttle=("feed", digest, 60),
            hit_limit=hit_limit,
            threshold=threshold,
            max_sources=max_sources,
            mark_ttl=3600,
            **plan,
        )

    read = warm()
    assert read.keys == keys
    expected = store.read_page(keys, **plan)
    assert (read.page.ids, read.page.floor, read.page.bodies) == (
        expected.ids,
        expected.floor,
        expected.bodies,
    )
    assert read.prelude.token is not None and read.prelude.hits == 1
    assert store.client().ttl(keys[0]) > 0  # the read mark
    # Declined, the prelude alone: another user claimed (who has a feed and a current list
    # too: their feed is not even marked), the throttle spent, too many sources, a stale
    # pull-author list, an inactive user, no token entry.
    other = user + 1
    store.client().zadd(store.feed_key(other), {store.SENTINEL: 0})
    store.client().expire(store.feed_key(other), 100)
    store.set_pull_authors(other, f"{threshold}.{version()}", [], 60)
    assert warm(user_id=other).page is None
    assert store.client().ttl(store.feed_key(other)) <= 100
    assert warm(user_id=other).prelude.hits == 0  # not confirmed: counted against no one
    assert warm(hit_limit=1).page is None
    assert warm(max_sources=len(keys) - 1).page is None
    store.bump_pull_version()
    assert warm().page is None
    store.set_pull_authors(user, f"{threshold}.{version()}", authors, 60)
    assert warm().page is not None
    store.token_set(digest, orjson.dumps({**entry, "is_active": False}), 60)
    assert warm().page is None
    store.token_delete([digest])
    assert warm().page is None and warm().prelude.token is None
