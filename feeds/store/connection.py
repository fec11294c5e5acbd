"""The process's Redis clients and the ways the store talks to them besides plain redis-py
calls: a raw round trip (the hot read path), a scatter-gather round with a deadline (reads on
Redis Cluster) and a Lua script runner (EVALSHA).

``REDIS_URL`` names one Redis (``redis://host:port/db``) or a Redis Cluster
(``redis+cluster://host:port[,host:port...]``, startup nodes): then client() is redis-py's
RedisCluster, which routes each single-key command, pipeline part and script call (whose keys
share a hash slot) to the node owning its slot."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar
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


# Errors a batch retries. Every Redis error, not only connection ones: OOM ("used memory >
# maxmemory"), LOADING, and Cluster MOVED/TRYAGAIN arrive as error replies and pass with time.
# A permanent one (WRONGTYPE) spends the bounded retry budget and becomes a dead letter.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError,)


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


def async_pubsub_client():
    """The async client whose pub/sub the stream gateway listens on. On a cluster, a plain
    client of one node: Redis Cluster delivers a PUBLISH on any node to subscribers on every
    node (and redis-py's async cluster client has no pub/sub)."""
    if not is_cluster():
        return async_client()
    import redis.asyncio

    node = cluster_nodes(settings.REDIS_URL)[0]
    password = urlsplit(settings.REDIS_URL).password
    return redis.asyncio.Redis(host=node.host, port=node.port, password=password)


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
        if isinstance(reply, redis.exceptions.ResponseError):
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


def scatter(
    commands: Sequence[tuple[str, tuple]], deadline: float, *, skip_suspect: bool = True
) -> tuple[list, set[str]]:
    """One parallel round on a cluster with a deadline: ``commands`` are (routing key, command);
    each node's share is written on one of its pooled connections, all before any is read, and
    each node's replies are read until ``deadline`` seconds after the start. Returns (replies,
    names of the nodes that did not answer in time or at all); a missing node's replies are
    LOST and its connections are dropped (never reused with replies pending). An error reply
    comes back as the exception object in its place. A node that timed out in the last
    SUSPECT_SECONDS is not asked (its replies are LOST at once) unless ``skip_suspect`` is
    False (a read that cannot do without it asks anyway). On one Redis: round_trip (no
    deadline)."""
    if not is_cluster():
        return round_trip(*(command for _, command in commands)), set()
    c = _gather_client()
    now = time.monotonic()
    end = now + deadline
    groups: dict[str, tuple[ClusterNode, list[int]]] = {}
    for i, (key, _) in enumerate(commands):
        node = c.get_node_from_key(key)
        groups.setdefault(node.name, (node, []))[1].append(i)
    replies: list = [LOST] * len(commands)
    failed: set[str] = set()
    sent = []
    for name, (node, idx) in groups.items():
        if skip_suspect and _suspect.get(name, 0.0) > now:  # timed out a moment ago
            failed.add(name)
            continue
        pool = node.redis_connection.connection_pool
        try:
            conn = pool.get_connection()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            _suspect[name] = time.monotonic() + SUSPECT_SECONDS
            failed.add(name)
            continue
        try:
            conn.send_packed_command([b"".join(hiredis.pack_command(commands[i][1]) for i in idx)])
            sent.append((name, pool, conn, idx))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            conn.disconnect()
            pool.release(conn)
            _suspect[name] = time.monotonic() + SUSPECT_SECONDS
            failed.add(name)
    moved = bool(failed)
    for name, pool, conn, idx in sent:
        try:
            for i in idx:
                # Past the deadline a node is still read if its answer is already here (a slow
                # node read first must not make the others' answers late).
                left = max(end - time.monotonic(), 0.0)
                if not conn.can_read(timeout=left):
                    raise redis.exceptions.TimeoutError(f"{name}: no answer in {deadline}s")
                try:
                    replies[i] = conn.read_response()
                except redis.exceptions.ResponseError as exc:
                    moved |= isinstance(
                        exc, redis.exceptions.MovedError | redis.exceptions.AskError
                    )
                    replies[i] = exc
            _suspect.pop(name, None)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            conn.disconnect()  # replies may still come: never reuse it
            _suspect[name] = time.monotonic() + SUSPECT_SECONDS
            failed.add(name)
            moved |= not isinstance(exc, redis.exceptions.TimeoutError)  # gone, not slow
        finally:
            pool.release(conn)
    if moved:  # slots moved or a node is gone (resharding, failover): learn the new owners
        _relearn_slots(c)
    return replies, failed


_relearned_at = 0.0


def _relearn_slots(c: RedisCluster) -> None:
    """Ask the cluster for its slot map again, at most once per SUSPECT_SECONDS."""
    global _relearned_at
    now = time.monotonic()
    if now - _relearned_at < SUSPECT_SECONDS:
        return
    _relearned_at = now
    try:
        c.nodes_manager.initialize()
    except redis.exceptions.RedisError:
        pass  # no node answers now: the next round tries again


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
    replica of each (Redis Cluster with replicas; a no-op on one Redis or a master with no
    replica). Redis replication is asynchronous: a master that acknowledged a write and died
    before sending it on takes the write with it, and the promoted replica never had it. On
    every master concerned, in parallel, one connection writes a small marker key in the slot
    of one of the keys (replication is one ordered stream per master, so once the marker is
    acknowledged by a replica so is everything written before it, on any connection) and runs
    ``WAIT 1 timeout``. A master whose replica did not acknowledge in time raises
    NotReplicated (after a look at the slot map: a replica that failed is no longer listed, and
    a master left with none has nothing to wait for)."""
    if not keys or not is_cluster():
        return
    timeout = settings.FEEDSITE_REPLICATE_TIMEOUT_MS if timeout_ms is None else timeout_ms
    c = client()
    for attempt in (1, 2):
        by_node: dict[str, tuple[ClusterNode, str]] = {}
        for key in keys:
            slot = c.keyslot(key)
            nodes = c.nodes_manager.slots_cache.get(slot) or []
            if len(nodes) < 2:  # no replica known for this slot
                continue
            by_node.setdefault(nodes[0].name, (nodes[0], key))
        sent = []
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
                        hiredis.pack_command(("SET", marker, "1", "PX", 60000))
                        + hiredis.pack_command(("WAIT", 1, timeout))
                    ]
                )
            except (redis.exceptions.ConnectionError, OSError):
                conn.disconnect()
                pool.release(conn)
                raise
            sent.append((name, pool, conn))
        behind = []
        error: BaseException | None = None
        for name, pool, conn in sent:
            try:
                conn.read_response()
                if int(conn.read_response()) < 1:
                    behind.append(name)
            except (redis.exceptions.RedisError, OSError) as exc:
                conn.disconnect()
                error = error or exc
            finally:
                pool.release(conn)
        if error is not None:
            raise error
        if not behind:
            return
        if attempt == 1:
            c.nodes_manager.initialize()  # a replica that failed leaves the slot map
    raise NotReplicated(f"no replica acknowledged the writes of {sorted(behind)} in {timeout} ms")


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
