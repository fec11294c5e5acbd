"""The process's Redis clients and the two ways the store talks to them besides plain
redis-py calls: a raw round trip (the hot read path) and a Lua script runner (EVALSHA)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import hiredis
import redis
from django.conf import settings
from django_redis import get_redis_connection

T = TypeVar("T")


# Errors a batch retries. Every Redis error, not only connection ones: OOM ("used memory >
# maxmemory"), LOADING, and Cluster MOVED/TRYAGAIN arrive as error replies and pass with time.
# A permanent one (WRONGTYPE) spends the bounded retry budget and becomes a dead letter.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError,)


_client: redis.Redis | None = None


def client() -> redis.Redis:
    """The process's Redis client (django-redis' pool; redis-py resets it after a fork)."""
    global _client
    if _client is None:
        _client = get_redis_connection("default")
    return _client


def async_client():
    """A redis.asyncio client for the stream gateway (its own pool, on the event loop). The
    pool blocks, up to 10 s, when all of its connections are busy: a thousand streams opening
    at once wait their turn instead of failing."""
    import redis.asyncio

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
