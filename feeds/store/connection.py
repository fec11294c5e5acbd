"""The process's Redis clients and the ways the store talks to them besides plain redis-py
calls: a raw round trip (the hot read path), a scatter-gather round with a deadline (reads on
Redis Cluster) and a Lua script runner (EVALSHA).

``REDIS_URL`` names one Redis (``redis://host:port/db``) or a Redis Cluster
(``redis+cluster://host:port[,host:port...]``, startup nodes): then client() is redis-py's
RedisCluster, which routes each single-key command, pipeline part and script call (whose keys
share a hash slot) to the node owning its slot."""

from __future__ import annotations

import logging
import random
import select
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import hiredis
import redis
from django.conf import settings
from django_redis import get_redis_connection
from django_redis.pool import ConnectionFactory
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

T = TypeVar("T")
log = logging.getLogger("feeds.store.connection")


# Errors a batch retries. Every Redis error, not only connection ones: OOM ("used memory >
# maxmemory"), LOADING, and Cluster MOVED/TRYAGAIN arrive as error replies and pass with time.
# A permanent one (WRONGTYPE) spends the bounded retry budget and becomes a dead letter.
# RedisClusterException ("Redis Cluster cannot be connected": a client made while its startup
# nodes are down, a failover under way) is no RedisError, and passes with time too.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
)


_client: redis.Redis | None = None


def is_cluster(url: str | None = None) -> bool:
    return (url or settings.REDIS_URL).startswith("redis+cluster://")


def cluster_nodes(url: str) -> list[ClusterNode]:
    """The startup nodes of a ``redis+cluster://h:p[,h:p...]`` url. Pure."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    nodes = []
    for part in netloc.split(","):
        host, _, port = part.rpartition(":")
        nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
    return nodes


def cluster_client(url: str, **options) -> RedisCluster:
    """redis-py's cluster client for a ``redis+cluster://`` url (password from the url). One
    retry after a short pause (it also relearns the slot map: a failover), not redis-py's
    default of several at each node's full socket timeout: a node that hangs fails a command
    in about two timeouts, which the request answers as a 503 and fan-out as a retry."""
    parts = urlsplit(url)
    options.setdefault("retry", Retry(ExponentialBackoff(cap=0.2, base=0.02), 1))
    return RedisCluster(
        startup_nodes=cluster_nodes(url),
        password=parts.password,
        username=parts.username,
        **options,
    )


class ClusterConnectionFactory(ConnectionFactory):
    """django-redis on Redis Cluster (the Django cache: settings snapshot, account throttles;
    single-key commands only): settings.CACHES names it when REDIS_URL is a cluster."""

    def connect(self, url: str):
        return cluster_client(url, socket_connect_timeout=0.5, socket_timeout=0.5)


def client() -> redis.Redis:
    """The process's Redis client: django-redis' pool on one Redis, redis-py's cluster client on
    a cluster (both reset their connections after a fork)."""
    global _client
    if _client is None:
        if is_cluster():
            _client = cluster_client(  # type: ignore[assignment]
                settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1
            )
        else:
            _client = get_redis_connection("default")
    assert _client is not None
    return _client


def async_client():
    """A redis.asyncio client for the stream gateway (its own pool, on the event loop). The
    pool blocks, up to 10 s, when all of its connections are busy: a thousand streams opening
    at once wait their turn instead of failing."""
    import redis.asyncio

    if is_cluster():
        import redis.asyncio.cluster

        parts = urlsplit(settings.REDIS_URL)
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[
                redis.asyncio.cluster.ClusterNode(n.host, n.port)
                for n in cluster_nodes(settings.REDIS_URL)
            ],
            password=parts.password,
            max_connections=64,
        )
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        settings.REDIS_URL, max_connections=64, timeout=10
    )
    return redis.asyncio.Redis(connection_pool=pool)


_script_shas: dict[str, str] = {}


def round_trip(*commands: tuple) -> list:
    """Send ``commands`` in one write on a pooled connection and read their raw replies: the
    hot read path's pipeline without redis-py's per-command bookkeeping (response callbacks,
    command stack, retry wrappers), which cost more CPU than the round trip itself. A broken
    connection is dropped and the round sent once more on a fresh one; an error reply is
    raised after every reply has been read, so the connection goes back to the pool clean."""
    if is_cluster():
        return _cluster_round(commands)
    pool = client().connection_pool
    for attempt in (1, 2):
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(map(hiredis.pack_command, commands))])
            replies = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            conn.disconnect()
            if attempt == 2:
                raise
            continue
        finally:
            pool.release(conn)
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                raise reply
        return replies
    raise AssertionError("unreachable")


def _cluster_round(commands: Sequence[tuple]) -> list:
    """round_trip on a cluster: redis-py's cluster pipeline (one pipeline per node, written to
    every node before any is read: one parallel round)."""
    pipe = client().pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, Exception):  # an error reply, or a node that did not answer
            raise reply
    return replies


class _Lost:
    def __repr__(self) -> str:
        return "LOST"


LOST = _Lost()  # scatter's reply of a node that did not answer in time


def best_effort(*commands: tuple[str, tuple]) -> None:
    """Cache writes a read makes on the side (a pull-author list, hidden authors, metrics): on a
    cluster one scatter round with the read deadline, a node that hangs simply misses them; on
    one Redis a plain round trip."""
    if is_cluster():
        scatter(commands, settings.FEEDSITE_READ_DEADLINE_MS / 1000)
    else:
        round_trip(*(command for _, command in commands))


# What a hedge may send to a replica: reads. A write in a node's share (a throttle hit, a cache
# refill, a metric) is not hedged: when the replica answers first it is simply missed (fail
# open). EXPIRE is a read's mark on its feed whose reply says whether the feed exists: a replica
# is asked EXISTS, the same reply without the write.
HEDGED_READS = frozenset(
    {
        "GET", "GETRANGE", "MGET", "STRLEN", "EXISTS", "TTL", "PTTL",
        "ZRANGE", "ZRANGEBYLEX", "ZREVRANGEBYLEX", "ZRANGEBYSCORE", "ZREVRANGE",
        "ZREVRANGEBYSCORE", "ZCARD", "ZSCORE", "HGET", "HGETALL", "HMGET", "SMEMBERS",
        "SISMEMBER", "LRANGE",
    }
)  # fmt: skip


def hedge_form(command: tuple) -> tuple | None:
    """What a replica is asked in place of ``command`` (None: a write, not hedged). Pure."""
    name = command[0].decode() if isinstance(command[0], bytes) else str(command[0])
    name = name.upper()
    if name in HEDGED_READS:
        return command
    if name == "EXPIRE":
        return ("EXISTS", command[1])
    return None


def hedge_delay_ms(samples: Sequence[float], floor_ms: float, cap_ms: float) -> float:
    """The hedge delay from a node's recent round times (ms): their p95, at least ``floor_ms``
    (a fast node is not hedged on every round's jitter), at most ``cap_ms`` (the hedge must
    have time to answer before the deadline). Pure."""
    if len(samples) < 20:
        return min(max(floor_ms, 0.0), cap_ms)
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return min(max(p95, floor_ms), cap_ms)


class _Node:
    """What scatter remembers of a master: its recent round times (the hedge delay)."""

    __slots__ = ("samples", "delay", "seen")

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.delay: float | None = None
        self.seen = 0

    def observe(self, ms: float) -> None:
        self.samples.append(ms)
        if len(self.samples) > 256:
            del self.samples[:128]
        self.seen += 1
        if self.seen % 32 == 1:
            self.delay = None  # recomputed on next use


_nodes: dict[str, _Node] = {}
hedge_counts = {"sent": 0, "won": 0}  # flushed to the stats by stats.flush_buffered
_counts_lock = threading.Lock()


def _count_hedge(what: str) -> None:
    with _counts_lock:
        hedge_counts[what] += 1


def take_hedge_counts() -> dict[str, int]:
    """This process's hedges sent and won since the last call (and reset them)."""
    with _counts_lock:
        counts = dict(hedge_counts)
        hedge_counts["sent"] = hedge_counts["won"] = 0
    return counts


# Shares whose other leg answered first (a master a replica answered for, a hedge that lost),
# their replies still due: the connections are kept (not dropped, not reused) until the node
# has answered them all, then go back to the pool (no reconnect per hedge). While a master has
# one, it is behind: a round does not wait on it again (its reads go to a replica at once, its
# writes are missed), and it is back the moment it has answered (no timer, no reconnect per
# round to a node that hangs).
_behind: dict[str, list] = {}
_behind_lock = threading.Lock()
BEHIND_GIVE_UP_SECONDS = 30.0  # a master silent this long: its kept connections are dropped


def _is_behind(name: str) -> bool:
    """Whether master ``name`` has not yet answered a share a replica answered for it (reads
    what has arrived meanwhile, and releases the connections it has answered on)."""
    with _behind_lock:
        legs = _behind.get(name)
        if not legs:
            return False
        now = time.monotonic()
        left = []
        for leg in legs:
            leg.drain()
            if leg.complete:
                leg.close(drop=False)
            elif leg.failed or now - leg.sent_at > BEHIND_GIVE_UP_SECONDS:
                leg.close(drop=True)
            else:
                left.append(leg)
        if left:
            _behind[name] = left
        else:
            del _behind[name]
        return bool(left)


def _keep_behind(leg) -> None:
    leg.kept = True
    with _behind_lock:
        _behind.setdefault(leg.name, []).append(leg)


def _hedge_delay(name: str, deadline: float) -> float | None:
    """Seconds after which a round's share of master ``name`` is also sent to a replica (None:
    hedging is off, FEEDSITE_READ_HEDGE_MS=off). FEEDSITE_READ_HEDGE_MS=auto (default): the
    node's observed p95, at least FEEDSITE_READ_HEDGE_FLOOR_MS, at most half the deadline; a
    number: that many ms."""
    setting = str(settings.FEEDSITE_READ_HEDGE_MS).strip().lower()
    if setting == "off":
        return None
    state = _nodes.setdefault(name, _Node())
    if setting != "auto":
        return float(setting) / 1000
    if state.delay is None:
        state.delay = hedge_delay_ms(
            state.samples, settings.FEEDSITE_READ_HEDGE_FLOOR_MS, deadline * 500
        )
    return state.delay / 1000


class _Leg:
    """One connection's share of a scatter round: the commands at ``idx`` (as sent, in order)
    and the replies read so far."""

    __slots__ = (
        "name",
        "pool",
        "conn",
        "idx",
        "replies",
        "extra",
        "failed",
        "sent_at",
        "closed",
        "kept",
    )

    def __init__(self, name: str, pool, conn, idx: list[int], extra: int = 0) -> None:
        self.name, self.pool, self.conn, self.idx = name, pool, conn, idx
        self.replies: list = []
        self.extra = extra  # leading replies to drop (READONLY)
        self.failed = False
        self.closed = False
        self.kept = False  # in _behind: its replies still due
        self.sent_at = time.monotonic()

    @property
    def complete(self) -> bool:
        return not self.failed and len(self.replies) == len(self.idx) + self.extra

    def drain(self) -> None:
        """Read every reply already arrived (a reply begun is read to its end)."""
        try:
            while not self.complete and self.conn.can_read(timeout=0):
                try:
                    self.replies.append(self.conn.read_response())
                except redis.exceptions.ResponseError as exc:
                    self.replies.append(exc)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            self.failed = True

    def close(self, *, drop: bool) -> None:
        if self.closed:
            return
        self.closed = True
        if drop:
            self.conn.disconnect()  # replies may still come: never reuse it
        self.pool.release(self.conn)

    def fileno(self) -> int | None:
        sock = getattr(self.conn, "_sock", None)
        return sock.fileno() if sock is not None else None


def _send(
    node: ClusterNode, commands: Sequence[Any], idx: list[int], prefix: tuple = ()
) -> _Leg | None:
    """Write ``commands[i]`` for i in ``idx`` (after ``prefix``) on a pooled connection of
    ``node``; None when it cannot be written (the connection is dropped)."""
    pool = node.redis_connection.connection_pool
    try:
        conn = pool.get_connection()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return None
    try:
        conn.send_packed_command(
            [
                b"".join(
                    [
                        *map(hiredis.pack_command, prefix),
                        *(hiredis.pack_command(commands[i]) for i in idx),
                    ]
                )
            ]
        )
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        conn.disconnect()
        pool.release(conn)
        return None
    return _Leg(node.name, pool, conn, idx, extra=len(prefix))


def _replica_of(c: RedisCluster, key: str) -> ClusterNode | None:
    """A replica of the master holding ``key``'s slot, from the client's slot map (None: none
    known). With several, one at random."""
    nodes = c.nodes_manager.slots_cache.get(c.keyslot(key)) or []
    if len(nodes) < 2:
        return None
    replica = nodes[1] if len(nodes) == 2 else random.choice(nodes[1:])
    if replica.redis_connection is None:
        return None
    return replica


def _wait_readable(legs: Sequence[_Leg], until: float) -> None:
    """Sleep until one of ``legs``' sockets has data or ``until`` (monotonic) passes."""
    left = until - time.monotonic()
    if left <= 0:
        return
    poller = select.poll()
    for leg in legs:
        fd = leg.fileno()
        if fd is not None:
            poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    poller.poll(max(1, int(left * 1000 + 0.999)))


class _Share:
    """A master's share of a round: its leg, the hedge to a replica once sent, and when to send
    it."""

    __slots__ = (
        "name", "node", "idx", "master", "replica", "hedge_at", "hedgeable", "done", "give_up",
        "asked",
    )  # fmt: skip

    def __init__(self, name: str, node: ClusterNode, idx: list[int]) -> None:
        self.name, self.node, self.idx = name, node, idx
        self.master: _Leg | None = None
        self.replica: _Leg | None = None
        self.hedge_at: float | None = None
        self.hedgeable: list[int] = []
        self.done = False
        self.give_up: float | None = None  # writes alone: not waited for past this
        self.asked = False  # the master was sent this share (or is not to be)


def scatter(
    commands: Sequence[tuple[str, tuple]], deadline: float, *, skip_suspect: bool = True
) -> tuple[list, set[str]]:
    """One parallel round on a cluster with a deadline: ``commands`` are (routing key, command);
    each master's share is written on one of its pooled connections, all before any is read,
    and read until ``deadline`` seconds after the start. A share not answered within the hedge
    delay (_hedge_delay) is also sent, its reads only (hedge_form), to a replica of that master
    on a READONLY connection: the first complete answer wins; the other connection is kept
    aside until its replies have come (_keep_behind). When the replica wins, the share's
    writes are missed (fail open), and the master is behind: later rounds send its reads
    straight to a replica until it has answered. Returns
    (replies, names of the masters whose share neither answered in time); a missing share's
    replies are LOST. An error reply comes back as the exception object in its place (a
    replica's error reply, e.g. MASTERDOWN, makes its hedge lose instead). A master that timed
    out in the last SUSPECT_SECONDS is not asked (its reads go to a replica at once, its writes
    are LOST) unless ``skip_suspect`` is False. A command refused with MOVED (a failover or a
    resharding since the slot map was learned) is sent once more, to the new owner, within the
    same deadline. On one Redis: round_trip (no deadline)."""
    if not is_cluster():
        return round_trip(*(command for _, command in commands)), set()
    start = time.monotonic()
    replies, failed = _scatter_round(commands, deadline, skip_suspect)
    moved = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.MovedError)]
    left = deadline - (time.monotonic() - start)
    if moved and left > 0:
        # A slot moved (a failover, a resharding): the round moved each refused slot to the
        # node its MOVED names (_follow_moved); what was refused is sent once more, there, in
        # what is left of the deadline. A refused command did not run: no write is doubled.
        again, failed_again = _scatter_round([commands[i] for i in moved], left, skip_suspect)
        for i, reply in zip(moved, again, strict=True):
            replies[i] = reply
        failed |= failed_again
    if moved:  # the other slots that moved with these: the whole map, at most once a second
        _relearn_slots(_gather_client(), min_gap=SUSPECT_SECONDS)
    return replies, failed


def _follow_moved(c: RedisCluster, refused: Sequence[redis.exceptions.MovedError]) -> bool:
    """Move each refused slot to the node its MOVED reply names, in the client's slot map
    (redis-py's own move_slot: the old master becomes that slot's replica after a failover).
    False when a named node is one the client has no connection to yet (the map is to be
    learned anew)."""
    known = True
    for err in {e.slot_id: e for e in refused}.values():
        c.nodes_manager.move_slot(err)
        node = c.nodes_manager.slots_cache[err.slot_id][0]
        known &= node.redis_connection is not None
    return known


def _scatter_round(
    commands: Sequence[tuple[str, tuple]], deadline: float, skip_suspect: bool
) -> tuple[list, set[str]]:
    """scatter's one round on a cluster (no following of MOVED)."""
    c = _gather_client()
    now = time.monotonic()
    end = now + deadline
    shares: dict[str, _Share] = {}
    for i, (key, _) in enumerate(commands):
        node = c.get_node_from_key(key)
        share = shares.get(node.name)
        if share is None:
            share = shares[node.name] = _Share(node.name, node, [])
        share.idx.append(i)
    replies: list = [LOST] * len(commands)
    hedged = [hedge_form(command) for _, command in commands]
    failed: set[str] = set()
    moved = False
    try:
        for name, share in shares.items():
            share.hedgeable = [i for i in share.idx if hedged[i] is not None]
            delay = _hedge_delay(name, deadline) if share.hedgeable else None
            suspect = skip_suspect and _suspect.get(name, 0.0) > now
            if suspect:
                share.asked = True  # timed out a moment ago: not asked again (LOST at once)
            elif _is_behind(name):
                suspect = True  # a replica answered for it: not waited on (asked if need be)
            if not suspect:
                share.asked = True
                share.master = _send(share.node, [cmd for _, cmd in commands], share.idx)
                if share.master is None:
                    _suspect[name] = time.monotonic() + SUSPECT_SECONDS
                    moved = True
            if share.master is None:
                delay = 0.0 if delay is not None else None  # straight to a replica, if any
            if delay is not None:
                share.hedge_at = now + delay
            if share.master is None and share.hedge_at is None:
                share.done = True
                failed.add(name)
            elif not share.hedgeable and settings.FEEDSITE_READ_HEDGE_MS != "off":
                # Writes alone (a cache refill, a throttle hit, metrics): where a replica could
                # answer the reads, the master is not waited for past the hedge delay (fail open).
                if _replica_of(c, commands[share.idx[0]][0]) is not None:
                    share.give_up = now + (_hedge_delay(name, deadline) or 0.0)
        pending = [s for s in shares.values() if not s.done]
        while pending:
            now = time.monotonic()
            for share in pending:
                legs = [leg for leg in (share.master, share.replica) if leg and not leg.failed]
                for leg in legs:
                    leg.drain()
                master, replica = share.master, share.replica
                if master is not None and master.complete:
                    for i, reply in zip(share.idx, master.replies, strict=True):
                        replies[i] = reply
                        moved |= isinstance(
                            reply, redis.exceptions.MovedError | redis.exceptions.AskError
                        )
                    _nodes.setdefault(share.name, _Node()).observe((now - master.sent_at) * 1000)
                    _suspect.pop(share.name, None)
                    share.done = True
                elif replica is not None and replica.complete:
                    got = replica.replies[replica.extra :]
                    if any(isinstance(r, redis.exceptions.ResponseError) for r in got):
                        moved |= any(isinstance(r, redis.exceptions.MovedError) for r in got)
                        replica.failed = True  # not serving these slots (MASTERDOWN, MOVED)
                        log.info("hedge to %s refused: %r", replica.name, got[:1])
                    else:
                        for i, reply in zip(replica.idx, got, strict=True):
                            replies[i] = reply
                        _count_hedge("won")
                        _suspect.pop(replica.name, None)
                        if master is not None and not master.failed:
                            _keep_behind(master)  # its replies are still due: kept, not dropped
                            share.master = None
                        share.done = True
                if share.done:
                    continue
                if share.give_up is not None and now >= share.give_up:
                    if master is not None and not master.failed:
                        _keep_behind(master)  # its replies are still due: kept, not dropped
                        share.master = None
                    share.done = True
                    failed.add(share.name)
                    continue
                if share.replica is not None and share.replica.failed and not share.asked:
                    # The replica cannot answer and the master was passed over (behind, or
                    # timed out a moment ago): ask it after all, rather than leave it out.
                    share.asked = True
                    share.master = _send(share.node, [cmd for _, cmd in commands], share.idx)
                    master = share.master
                if master is not None and master.failed:
                    _suspect[share.name] = now + SUSPECT_SECONDS
                    moved = True
                    if share.hedge_at is not None:
                        share.hedge_at = now  # gone, not slow: the replica at once
                if share.replica is None and share.hedge_at is not None and now >= share.hedge_at:
                    share.hedge_at = None
                    replica_node = _replica_of(c, commands[share.hedgeable[0]][0])
                    if replica_node is not None and skip_suspect:
                        if _suspect.get(replica_node.name, 0.0) > now:  # it timed out too
                            replica_node = None
                    if replica_node is None and not share.asked:
                        # No replica to ask, and the master was passed over: ask it after all.
                        share.asked = True
                        share.master = _send(share.node, [cmd for _, cmd in commands], share.idx)
                    if replica_node is not None:
                        _is_behind(replica_node.name)  # its connections back from lost hedges
                    if replica_node is not None:
                        hedge = [hedged[i] for i in range(len(commands))]
                        share.replica = _send(
                            replica_node, hedge, share.hedgeable, prefix=(("READONLY",),)
                        )
                        if share.replica is not None:
                            _count_hedge("sent")
                alive = [leg for leg in (share.master, share.replica) if leg and not leg.failed]
                if not alive and share.hedge_at is None:
                    share.done = True
                    failed.add(share.name)
            pending = [s for s in pending if not s.done]
            if not pending:
                break
            now = time.monotonic()
            if now >= end:
                break
            wake = min(
                [
                    end,
                    *(s.hedge_at for s in pending if s.hedge_at),
                    *(s.give_up for s in pending if s.give_up),
                ]
            )
            _wait_readable(
                [leg for s in pending for leg in (s.master, s.replica) if leg and not leg.failed],
                wake,
            )
        for share in shares.values():
            if not share.done:  # past the deadline, an answer already here still counts
                for late in (share.master, share.replica):
                    if late is not None and not late.failed:
                        late.drain()
                if share.master is not None and share.master.complete:
                    for i, reply in zip(share.idx, share.master.replies, strict=True):
                        replies[i] = reply
                    share.done = True
            if not share.done:
                failed.add(share.name)
                if share.replica is not None:
                    _suspect[share.replica.name] = time.monotonic() + SUSPECT_SECONDS
                _suspect[share.name] = time.monotonic() + SUSPECT_SECONDS
            for ended in (share.master, share.replica):
                if ended is None:
                    continue
                if share.done and not ended.complete and not ended.failed:
                    _keep_behind(ended)  # the hedge that lost: its replies come, kept till then
                else:
                    ended.close(drop=not ended.complete or ended.failed)
    except BaseException:
        for share in shares.values():  # an unexpected error: no connection goes back dirty
            for open_leg in (share.master, share.replica):
                if open_leg is not None and not open_leg.kept:
                    open_leg.close(drop=True)
        raise
    if moved:  # slots moved or a node is gone (resharding, failover): learn the new owners
        refused = [r for r in replies if isinstance(r, redis.exceptions.MovedError)]
        if not refused or not _follow_moved(c, refused):
            _relearn_slots(c, min_gap=SUSPECT_SECONDS)
    return replies, failed


_relearned_at = 0.0


def _relearn_slots(c: RedisCluster, min_gap: float) -> None:
    """Ask the cluster for its slot map again, at most once per ``min_gap`` seconds."""
    global _relearned_at
    now = time.monotonic()
    if now - _relearned_at < min_gap:
        return
    _relearned_at = now
    try:
        c.nodes_manager.initialize()
    except TRANSIENT_ERRORS:
        pass  # no node answers now, or they disagree: the next round tries again


# A node that did not answer a gather in time is not asked again for this long: reads meanwhile
# leave it out at once instead of each waiting out the deadline (or a reconnect's handshake).
SUSPECT_SECONDS = 1.0
_suspect: dict[str, float] = {}
_gather: RedisCluster | None = None


def _gather_client() -> RedisCluster:
    """The cluster client of scatter: its own connections, with short socket timeouts, so
    that (re)connecting to a node that hangs costs a read at most half a second."""
    global _gather
    if _gather is None:
        _gather = cluster_client(
            settings.REDIS_URL,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),  # scatter has its own deadline and circuit breaker
            # No handshake on connect (RESP2: no HELLO; no CLIENT SETINFO): a new connection
            # to a node that hangs would wait out the socket timeout on it (a hedge to a
            # stalled replica) instead of leaving it to the round's deadline.
            protocol=2,
            driver_info=None,
        )
    return _gather


class NotReplicated(redis.exceptions.RedisError):
    """A write a master acknowledged has not reached its replica within the wait: a failover
    now could lose it. Transient (TRANSIENT_ERRORS): the caller retries the write."""


def _hash_tag(key: str) -> str:
    """The part of ``key`` that decides its slot: its {hash tag}, or the whole key. Pure."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start > -1 and end > start + 1 else key


def replicate(keys: Sequence[str], timeout_ms: int | None = None) -> None:
    """Block until every write made so far to the masters holding ``keys`` has reached one
    replica of each (Redis Cluster; a no-op on one Redis or on a master with no replica).
    Redis replication is asynchronous: a master that acknowledged a write and died before
    sending it on takes the write with it, and the promoted replica never had it; a replica
    that lags answers a hedged read from before it. On every master concerned, in parallel, one
    connection asks ROLE (the master's own list of its replicas: a client's slot map can lag a
    replica that joined since) and writes a small marker key in the slot of one of the keys
    (replication is one ordered stream per master, so once the marker is acknowledged by a
    replica so is everything written before it, on any connection); where ROLE lists a
    replica, ``WAIT 1 timeout`` follows on that connection. A master whose replica did not
    acknowledge in time raises NotReplicated (after the slot map is learned again and the wait
    tried once more), unless no replica of it is left (_replicas_gone: dead, it answers no
    read)."""
    if not keys or not is_cluster():
        return
    timeout = settings.FEEDSITE_REPLICATE_TIMEOUT_MS if timeout_ms is None else timeout_ms
    c: Any = client()  # a RedisCluster here
    for attempt in (1, 2):
        by_node: dict[str, tuple[ClusterNode, str]] = {}
        for key in keys:
            node = c.get_node_from_key(key)
            by_node.setdefault(node.name, (node, key))
        sent: list[tuple[str, Any, Any]] = []
        for name, (node, key) in by_node.items():
            node = c.get_node(node_name=name) or node
            if node.redis_connection is None:
                c.nodes_manager.initialize()
                node = c.get_node(node_name=name) or node
            pool = node.redis_connection.connection_pool
            conn = pool.get_connection()
            marker = f"{settings.FEEDSITE_KEY_PREFIX}:replicated:{{{_hash_tag(key)}}}"
            try:
                conn.send_packed_command(
                    [
                        hiredis.pack_command(("ROLE",))
                        + hiredis.pack_command(("SET", marker, "1", "PX", 60000))  # type: ignore[arg-type]
                    ]
                )
            except (redis.exceptions.ConnectionError, OSError):
                for _, sent_pool, sent_conn in [*sent, (name, pool, conn)]:
                    sent_conn.disconnect()  # replies pending: never reused
                    sent_pool.release(sent_conn)
                raise
            sent.append((name, pool, conn))
        waiting: list[tuple[str, Any, Any]] = []
        error: BaseException | None = None
        for name, pool, conn in sent:
            try:
                role = conn.read_response()
                conn.read_response()  # the marker's OK (MOVED, if the slot moved: raises)
                if role and role[0] in (b"master", "master") and len(role) > 2 and role[2]:
                    conn.send_packed_command([hiredis.pack_command(("WAIT", 1, timeout))])  # type: ignore[arg-type]
                    waiting.append((name, pool, conn))
                    continue
            except (redis.exceptions.RedisError, OSError) as exc:
                conn.disconnect()
                error = error or exc
            pool.release(conn)
        behind = []
        for name, pool, conn in waiting:
            try:
                # WAIT answers after up to `timeout` ms: read it past the socket timeout.
                if not conn.can_read(timeout=timeout / 1000 + 1.0):
                    conn.disconnect()
                    behind.append(name)
                elif int(conn.read_response()) < 1:
                    behind.append(name)
            except (redis.exceptions.RedisError, OSError) as exc:
                conn.disconnect()
                error = error or exc
            finally:
                pool.release(conn)
        if error is not None:
            raise error
        behind = [name for name in behind if not _replicas_gone(c, name)]
        if not behind:
            return
        if attempt == 1:
            c.nodes_manager.initialize()  # a replica that failed leaves the slot map
    raise NotReplicated(f"no replica acknowledged the writes of {sorted(behind)} in {timeout} ms")


def _replicas_gone(c: RedisCluster, master: str) -> bool:
    """Whether every replica of ``master`` (the client's slot map) is dead: the master no
    longer lists it among its connected replicas and its port refuses a connection. A dead
    replica answers no read, so there is nothing to wait for; started again, it syncs before
    it serves (replica-serve-stale-data no). One the master still lists, or that connects
    (stalled, slow, or cut off from the master but not from us), may answer reads from before
    the write: it is waited for, as is anything not known for sure. Until the cluster flags a
    dead replica failed (cluster-node-timeout), this spares every edit, delete, block and
    fan-out step on its master a 503 or a retry."""
    replicas = {
        n.name: n
        for nodes in c.nodes_manager.slots_cache.values()
        if nodes and nodes[0].name == master
        for n in nodes[1:]
    }
    master_node = c.get_node(node_name=master)
    if not replicas or master_node is None or master_node.redis_connection is None:
        return False
    try:
        info = master_node.redis_connection.info("replication")
    except TRANSIENT_ERRORS:
        return False
    listed = {
        f"{v.get('ip')}:{v.get('port')}"
        for k, v in info.items()
        if k.startswith("slave") and isinstance(v, dict)
    }
    for node in replicas.values():
        if node.name in listed or node.redis_connection is None:
            return False
        pool = node.redis_connection.connection_pool
        kwargs = {**pool.connection_kwargs, "socket_connect_timeout": 0.25, "socket_timeout": 0.25}
        conn = pool.connection_class(**kwargs)
        try:
            conn.connect()
        except (redis.exceptions.ConnectionError, OSError) as exc:
            if isinstance(
                exc, redis.exceptions.AuthenticationError | redis.exceptions.BusyLoadingError
            ):
                return False  # it answered
            continue  # refused or unreachable, and its master has let it go: gone
        except redis.exceptions.RedisError:
            return False  # no answer in time (maybe stalled), or an error reply: there
        else:
            return False  # it is there: its replication is behind
        finally:
            conn.disconnect()
    log.warning("replicate: no replica of %s is connected or reachable; not waited for", master)
    return True


def with_script(source: str, run: Callable[[str], T]) -> T:
    """``run(sha)`` with the script loaded (EVALSHA: the source is sent once per process); when
    the server lost its script cache (restart, SCRIPT FLUSH), load it again, once."""
    for attempt in (1, 2):
        sha = _script_shas.get(source)
        if sha is None:
            sha = _script_shas[source] = client().script_load(source)
        try:
            return run(sha)
        except redis.exceptions.NoScriptError:
            _script_shas.pop(source, None)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def ping() -> bool:
    return bool(client().ping())
