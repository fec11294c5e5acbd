"""Hedged reads on a Redis Cluster with replicas (`make test-cluster`: three masters, a replica
behind each): a read's share of a master that has not answered within the hedge delay is also
sent to its replica, and the first answer wins. A master stalled (SIGSTOP, well under
cluster-node-timeout) leaves every page complete and in time; what the replica answers never
shows a deleted activity or a body older than a completed edit's (an edit and a delete answer
only once a replica has their write: connection.replicate)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time

import pytest
import redis
from rest_framework.test import APIClient

from activities.models import Activity
from activities.services import activity_delete, activity_edit, activity_publish
from feeds import store
from feeds.read import RedisSource, feed_page, feed_read_open
from feeds.services import feed_settings_update
from feeds.store.connection import hedge_delay_ms, hedge_form, scatter
from feeds.store.throttle import window_of
from feedsite.api.auth import token_digest
from follows.services import follow_create
from tests.conftest import activate, make_token, wait_until
from tests.factories import UserFactory
from tests.integration.test_failover import role


def _replicated() -> bool:
    if not store.is_cluster():
        return False
    slots = store.client().nodes_manager.slots_cache
    return all(len(nodes) > 1 for nodes in slots.values())


pytestmark = pytest.mark.skipif(
    not _replicated(), reason="needs REDIS_URL=redis+cluster:// with a replica behind each master"
)


def node_of(key: str) -> str:
    return store.client().get_node_from_key(key).name


def _pid(name: str) -> int:
    return int(
        store.client().get_node(node_name=name).redis_connection.info("server")["process_id"]
    )


@pytest.fixture(autouse=True)
def replicas_known() -> None:
    """Every master has a replica in the client's slot map (an earlier test may have restarted
    a node, which rejoins as a replica a moment later)."""

    def known() -> bool:
        c = store.client()
        c.nodes_manager.initialize()
        return all(len(nodes) > 1 for nodes in c.nodes_manager.slots_cache.values())

    wait_until(known, timeout=30, interval=0.5)


def _replica_names(master: str) -> list[str]:
    for nodes in store.client().nodes_manager.slots_cache.values():
        if nodes[0].name == master:
            return [n.name for n in nodes[1:]]
    raise AssertionError(f"{master} holds no slot")


class _Stopped:
    """SIGSTOP the named nodes for the block (SIGCONT after, whatever happens)."""

    def __init__(self, *names: str) -> None:
        self.pids = [_pid(n) for n in names]

    def __enter__(self) -> _Stopped:
        for pid in self.pids:
            os.kill(pid, signal.SIGSTOP)
        self.at = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.resumed = time.monotonic()
        for pid in self.pids:
            os.kill(pid, signal.SIGCONT)


def _publish(actor, n: int) -> int:
    data = {"verb": "posted", "object_type": "note", "object_id": f"{actor.pk}-{n}"}
    return activity_publish(actor_id=actor.pk, data=data)[0].id


def _p99(times: list[float]) -> float:
    return sorted(times)[max(0, int(len(times) * 0.99) - 1)]


def _stalled_master() -> str:
    """A master holding none of the global keys (the stats a read adds to live elsewhere)."""
    busy = node_of(store.pull_version_key())
    return next(n.name for n in store.client().get_primaries() if n.name != busy)


def test_hedge_form_and_delay_are_what_a_replica_may_answer():
    assert hedge_form(("GET", "k")) == ("GET", "k")
    assert hedge_form(("ZRANGEBYLEX", "k", "-", "+")) == ("ZRANGEBYLEX", "k", "-", "+")
    assert hedge_form(("EXPIRE", "k", 60)) == ("EXISTS", "k")  # the mark: exists or not
    assert hedge_form(("INCR", "k")) is None  # a write: missed when the replica wins
    assert hedge_form(("EVALSHA", "x", 1, "k")) is None
    assert hedge_delay_ms([], 5, 25) == 5  # too few samples: the floor
    assert hedge_delay_ms([1.0] * 100, 5, 25) == 5  # a fast node: not below the floor
    assert hedge_delay_ms([float(i) for i in range(100)], 5, 25) == 25  # capped (deadline)
    assert hedge_delay_ms([float(i % 10) for i in range(100)] + [15.0] * 10, 5, 25) == 15


@pytest.mark.django_db(transaction=True)
def test_a_stalled_master_leaves_every_page_complete_and_in_time(settings):
    settings.FEEDSITE_READ_DEADLINE_MS = 200  # a loaded 2-core CI machine
    feed_settings_update(celebrity_threshold=1, aggregation_window_seconds=1)  # all pull
    stalled = _stalled_master()
    stars = UserFactory.create_batch(16)
    reader = UserFactory()
    on_stalled = [s for s in stars if node_of(store.timeline_key(s.pk)) == stalled]
    assert on_stalled and len(on_stalled) < len(stars)
    for star in stars:
        follow_create(follower_id=reader.pk, followee_id=star.pk)
    everything = {_publish(s, n) for s in stars for n in range(2)}
    activate(reader, *stars)
    # The token entry too on the stalled master: the read's first round trip is hedged.
    token = next(
        t
        for t in (make_token(reader) for _ in range(200))
        if node_of(store.token_key(token_digest(t))) == stalled
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    keys = feed_read_open(reader.pk)

    def page() -> tuple[set[int], bool, float]:
        source = RedisSource(list(keys))
        started = time.perf_counter()
        items, _ = feed_page(
            user_id=reader.pk, limit=100, cursor=None, source=source, hidden=frozenset()
        )
        took = time.perf_counter() - started
        return {int(a) for item in items for a in item["activity_ids"]}, source.partial, took

    def api_page() -> tuple[set[int], bool, float]:
        started = time.perf_counter()
        res = api.get("/api/feed/", {"limit": 100})
        took = time.perf_counter() - started
        assert res.status_code == 200, res.content
        body = res.json()
        return {int(a) for i in body["items"] for a in i["activity_ids"]}, "partial" in body, took

    healthy = [read()[2] for read in (page, api_page) * 15]
    store.flush_buffered()
    sent, won = store.read_stat("read_hedges_sent"), store.read_stat("read_hedges_won")
    window_no, _ = window_of(60, time.time())
    ident = next(
        f"u:{n}"
        for n in range(10_000)
        if node_of(store.throttle_key("feed", f"u:{n}", window_no)) == stalled
    )
    with _Stopped(stalled) as stop:
        # The first thing asked of the stalled master is a write (a throttle hit): it is not
        # waited for past the hedge delay, and counts nothing (fails open).
        started = time.perf_counter()
        assert store.hit_window("feed", ident, 60)[0] == 0
        write_wait = time.perf_counter() - started
        stalled_times = []
        while time.monotonic() - stop.at < 5:  # 5 s, against cluster-node-timeout 15 s
            for read in (page, api_page):
                ids, partial, took = read()
                assert (ids, partial) == (everything, False)  # complete, from the replica
                stalled_times.append(took)
        stalled_for = time.monotonic() - stop.at
    store.flush_buffered()
    hedges_won = store.read_stat("read_hedges_won") - won
    print(
        f"\nstalled master {stalled} for {stalled_for:.1f} s: {len(stalled_times)} reads complete; "
        "read p50/p99 "
        f"healthy {statistics.median(healthy) * 1000:.1f}/{_p99(healthy) * 1000:.1f} ms, "
        f"stalled {statistics.median(stalled_times) * 1000:.1f}/{_p99(stalled_times) * 1000:.1f}"
        f" ms (deadline 200 ms); hedges sent {store.read_stat('read_hedges_sent') - sent}, "
        f"won {hedges_won}; a throttle hit there gave up after {write_wait * 1000:.1f} ms"
    )
    assert stalled_for < 15  # under cluster-node-timeout: no failover, a stall
    assert write_wait < 0.1, write_wait  # the hedge delay (at most half the deadline)
    assert _p99(stalled_times) < 0.2  # within the deadline
    assert hedges_won >= 1
    settings.FEEDSITE_METRICS_TOKEN = "scrape-token"
    scraped = APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token")
    won_total = next(
        float(line.split()[-1])
        for line in scraped.content.decode().splitlines()
        if line.startswith("feedsite_read_hedges_won_total")
    )
    assert won_total >= hedges_won  # what an operator sees
    text = scraped.content.decode()
    assert "feedsite_redis_cluster_masters 3.0" in text  # a stall is no failover
    assert "feedsite_redis_cluster_masters_without_replica 0.0" in text


@pytest.mark.django_db(transaction=True)
def test_a_replica_never_answers_a_deleted_activity_or_an_older_body(settings):
    """An edit and a delete answer only once a replica has their write: a replica stopped
    meanwhile holds them back; once it runs they answer, and a read its master cannot answer
    (stalled) shows the new body and not the deleted activity."""
    settings.FEEDSITE_READ_DEADLINE_MS = 200
    settings.FEEDSITE_REPLICATE_TIMEOUT_MS = 5000
    feed_settings_update(celebrity_threshold=1000, aggregation_window_seconds=1)
    author, reader = UserFactory.create_batch(2)
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    ids = [_publish(author, n) for n in range(40)]
    activate(reader, author)  # the feed built from PostgreSQL (no worker here)
    master = _stalled_master()  # not the node of the global keys (settings, stats)
    edited, deleted = [i for i in ids if node_of(store.body_key(i)) == master][:2]
    keys = feed_read_open(reader.pk)
    items, _ = feed_page(user_id=reader.pk, limit=100, cursor=None, source=RedisSource(keys))
    assert {int(a) for item in items for a in item["activity_ids"]} == set(ids)  # bodies cached
    replica = _replica_names(master)[0]
    answered: list[float] = []

    def edit_and_delete() -> None:
        activity_edit(activity_id=edited, changes={"object_title": "after the edit"})
        activity_delete(activity=Activity.objects.get(id=deleted))
        answered.append(time.monotonic())

    with _Stopped(replica) as stop:
        worker = threading.Thread(target=edit_and_delete)
        worker.start()
        time.sleep(0.5)
        assert not answered  # its replica has not got the edit: the edit has not answered
    worker.join(10)
    assert answered and answered[0] >= stop.resumed  # not before its replica had it
    with _Stopped(master):
        source = RedisSource(list(keys))
        items, _ = feed_page(user_id=reader.pk, limit=100, cursor=None, source=source)
    assert not source.partial
    shown = {int(a): item for item in items for a in item["activity_ids"]}
    assert deleted not in shown
    assert "after the edit" in json.dumps(shown[edited])


@pytest.mark.django_db(transaction=True)
def test_a_replica_the_client_has_not_learned_yet_is_waited_for(settings):
    """Whether a master has a replica to wait for is the master's own word (ROLE), not the
    client's slot map: a replica that joined after the map was learned (a lost master back as
    a replica) is waited for, as hedged reads may reach it as soon as any client learns it."""
    settings.FEEDSITE_REPLICATE_TIMEOUT_MS = 5000
    feed_settings_update(celebrity_threshold=1000)
    author = UserFactory()
    ids = [_publish(author, n) for n in range(30)]
    master = _stalled_master()
    aid = next(i for i in ids if node_of(store.body_key(i)) == master)
    replica = _replica_names(master)[0]
    c = store.client()
    slot = c.keyslot(store.body_key(aid))
    answered: list[float] = []

    def edit() -> None:
        activity_edit(activity_id=aid, changes={"object_title": "after the edit"})
        answered.append(time.monotonic())

    try:
        stop = _Stopped(replica)
        c.nodes_manager.slots_cache[slot] = c.nodes_manager.slots_cache[slot][:1]  # no replica
        with stop:
            worker = threading.Thread(target=edit)
            worker.start()
            time.sleep(0.5)
            assert not answered  # its replica has not got the edit: the edit has not answered
        worker.join(10)
        assert answered and answered[0] >= stop.resumed
    finally:
        c.nodes_manager.initialize()


def _fail_over_to(replica: str, master: str) -> None:
    """A coordinated failover (CLUSTER FAILOVER on ``replica``, once it is in sync): no write
    is lost; done when the two nodes have swapped roles. An election can be refused (the
    masters vote for a replica of one master at most once per two cluster-node-timeouts, and
    gossip lags on a loaded machine): then TAKEOVER, which needs no votes (nothing writes to
    these slots meanwhile, and the replica is in sync)."""
    host, port = replica.rsplit(":", 1)
    master_port = int(master.rsplit(":", 1)[1])

    def swapped() -> bool:
        return (role(int(port)), role(master_port)) == ("master", "slave")

    with redis.Redis(host=host, port=int(port), socket_timeout=5) as r:
        wait_until(lambda: r.info("replication").get("master_link_status") == "up", 30)
        r.execute_command("CLUSTER", "FAILOVER")
        try:
            wait_until(swapped, 8)
            return
        except AssertionError:
            pass
        wait_until(lambda: r.info("replication").get("master_link_status") == "up", 30)
        r.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
        wait_until(swapped, 20)


def test_a_read_just_after_a_failover_follows_moved_and_is_whole():
    """The gather client learned the slot map before a failover: the old master now answers
    MOVED, and the same read goes once more to the new one within its deadline, rather than
    leaving that source out (the page would be ``partial`` for every process's first read
    after each failover)."""
    key = store.timeline_key(424_242)
    store.client().delete(key)
    store.client().zadd(key, {store.encode_id(i): 0 for i in (1, 2, 3)})
    master = node_of(key)
    replica = _replica_names(master)[0]
    store.client().wait(1, 2000)  # the replica has the entries
    read = [(key, ("ZRANGEBYLEX", key, "-", "+"))]
    replies, failed = scatter(read, 1.0)  # the gather client knows today's map
    assert (len(replies[0]), failed) == (3, set())
    _fail_over_to(replica, master)
    try:
        replies, failed = scatter(read, 1.0)
        assert not isinstance(replies[0], Exception), replies[0]
        assert (sorted(replies[0]), failed) == (
            sorted(store.encode_id(i) for i in (1, 2, 3)),
            set(),
        )
    finally:
        _fail_over_to(master, replica)  # as it was, for the tests after this one
        store.client().nodes_manager.initialize()
