"""Fan-out through a failover on Redis Cluster with replicas: what a done step wrote is on a
replica, and a task that meets a failover waits for the promotion instead of spending its
retries on a dead master.

Redis replication is asynchronous: a master acknowledges a write before its replica has it, and
a master killed in between takes the write with it (the promoted replica never had it). A
fan-out step (a batch, the author-side writes of a job) therefore counts itself done only after
``fanout_replicate``: one marker SET and WAIT for one replica on each master it wrote to, in
parallel (connection.replicate). A master lost before that fails the step, which is retried
(idempotent writes) and lands on the promoted replica; one lost after it loses nothing the step
wrote. So after a failover mid fan-out no entry is missing, with no check or repair afterwards.

A failover takes cluster-node-timeout (15 s here) plus the replica's election; a task's retries
are seconds apart and bounded (2 in the tests). ``failover_wait`` around a task's work turns an
error a failover causes (a master refusing connections or silent, a write no replica
acknowledged) into a wait, at most FEEDSITE_FAILOVER_WAIT_SECONDS, until every slot is served
by a node that answers, then lets the error through: the retry meets the new master.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import cast

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from .connection import NotReplicated, client, is_cluster, replicate
from .errors import STORE_ERRORS, store_unavailable
from .feeds import _by_shard
from .keys import body_key, feed_key, notif_key, object_timeline_key, timeline_key

log = logging.getLogger("feeds.store.failover")

SLOTS = 16384
POLL_SECONDS = 0.2
PING_TIMEOUT = 0.5


def fanout_replicate(
    *,
    feeds: Iterable[int] = (),
    notifications: Iterable[int] = (),
    timelines: Iterable[int] = (),
    objects: Iterable[tuple[str, str]] = (),
    bodies: Iterable[int] = (),
) -> None:
    """Before a fan-out step counts as done: wait until what it wrote (these users' home feeds
    and notification feeds, these authors' and objects' timelines, these activities' bodies)
    has reached one replica of every master holding them. One parallel round of one SET + WAIT
    per master; home feeds name one key per virtual shard (its feeds share a slot). Raises
    NotReplicated (transient: the step is retried). Nothing on one Redis, on masters without a
    replica, or with FEEDSITE_FANOUT_REPLICATE off."""
    if not settings.FEEDSITE_FANOUT_REPLICATE or not is_cluster():
        return
    keys = [feed_key(users[0]) for users in _by_shard(feeds).values()]
    keys += [notif_key(u) for u in dict.fromkeys(notifications)]
    keys += [timeline_key(a) for a in dict.fromkeys(timelines)]
    keys += [object_timeline_key(*o) for o in dict.fromkeys(objects)]
    keys += [body_key(a) for a in dict.fromkeys(bodies)]
    replicate(keys)


def _answers(host: str, port: int, password: str | None) -> bool:
    """Whether the node answers a PING within PING_TIMEOUT (a connection of its own: a node
    that is gone refuses at once, one that hangs times out)."""
    node = redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_connect_timeout=PING_TIMEOUT,
        socket_timeout=PING_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return bool(node.ping())
    except (redis.exceptions.RedisError, OSError):
        return False
    finally:
        node.close()


def cluster_serving() -> bool:
    """The slot map learned again from the cluster (every process's client routes by it from
    now on); True when it covers every slot and each node it names, master or replica, answers.
    A killed master stays in the map until its replica is promoted; a replica that failed
    leaves it."""
    try:
        # (A process's first client needs one of its startup nodes to answer.)
        c = cast(RedisCluster, client())
        c.nodes_manager.initialize()
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException):
        return False  # no node answers, or slots are not covered
    slots = c.nodes_manager.slots_cache
    if len(slots) < SLOTS:
        return False
    nodes = {(n.host, n.port) for owners in slots.values() for n in owners}
    password = c.nodes_manager.connection_kwargs.get("password")
    return all(_answers(host, port, password) for host, port in nodes)


def wait_for_cluster(timeout: float) -> bool:
    """Poll cluster_serving until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not cluster_serving():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def after_failover(exc: BaseException) -> bool:
    """Whether ``exc`` is what a failover makes a fan-out step meet on a cluster: a node gone
    or silent, slots moved or not served, or a write no replica acknowledged."""
    return is_cluster() and (isinstance(exc, NotReplicated) or store_unavailable(exc))


@contextmanager
def failover_wait(time_limit: float | None = None) -> Iterator[None]:
    """Around a fan-out task's work: an error a failover causes waits (at most
    FEEDSITE_FAILOVER_WAIT_SECONDS, and never past ``time_limit`` seconds from the start less a
    5 s margin: the task's soft time limit) until the cluster serves every slot again, then
    propagates, so that the task's retry meets the promoted replica. Anything else propagates
    at once."""
    entered = time.monotonic()
    try:
        yield
    except STORE_ERRORS as exc:
        if after_failover(exc):
            started = time.monotonic()
            budget = float(settings.FEEDSITE_FAILOVER_WAIT_SECONDS)
            if time_limit is not None:
                budget = max(0.0, min(budget, time_limit - (started - entered) - 5))
            served = wait_for_cluster(budget)
            log.warning(
                "fan-out met a failover (%s: %s); %s after %.1f s",
                type(exc).__name__,
                str(exc)[:200],
                "every slot served again" if served else "still not served",
                time.monotonic() - started,
            )
            if not isinstance(exc, redis.exceptions.RedisError):
                # RedisClusterException ("cannot be connected": a process's first client while
                # its startup nodes are down) is no RedisError, which the tasks retry.
                raise redis.exceptions.ConnectionError(str(exc)) from exc
        raise
