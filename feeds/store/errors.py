"""Which Redis errors mean "the store is unavailable" and which are bugs.

Unavailable (a 503 with Retry-After to a request, fail-open for a throttle or a cache, a retry
for a task): Redis cannot be reached or answers in time, or answers with a reply that passes
with time (LOADING after a restart, READONLY on a replica after a failover, OOM at maxmemory,
CLUSTERDOWN / MASTERDOWN / TRYAGAIN / MOVED / ASK while a cluster fails over or reshards,
MISCONF when it cannot persist, BUSY while a script runs long). Anything else Redis answers
(WRONGTYPE, a Lua error, a syntax error) is a bug in our code or data: it must show as a logged
500, not hide behind "retry shortly".

redis-py maps most of those replies to classes (some subclass ResponseError: OutOfMemoryError,
ReadOnlyError, TryAgainError, ClusterDownError, MasterDownError, AskError, MovedError);
MISCONF and BUSY arrive as a plain ResponseError whose text starts with the code. The cluster
client raises RedisClusterException (not a RedisError) when no startup node answers or slots are
uncovered.
"""

from __future__ import annotations

import redis

# Classes that always mean unavailable. BusyLoadingError (LOADING), AuthenticationError and
# MaxConnectionsError subclass ConnectionError; ClusterDownError and MasterDownError subclass
# ClusterError; MovedError subclasses AskError.
UNAVAILABLE_CLASSES: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.SlotNotCoveredError,
)
# Reply codes redis-py leaves as a plain ResponseError that also mean "not now".
UNAVAILABLE_REPLIES: tuple[str, ...] = ("MISCONF ", "BUSY ", "NOREPLICAS ")
# RedisClusterException texts of a cluster nobody can reach (the rest are usage errors).
_CLUSTER_UNREACHABLE = ("Redis Cluster cannot be connected", "All slots are not covered")

# Everything the store may raise, for an ``except`` that then asks store_unavailable(exc) and
# re-raises the rest.
STORE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
)


# Connection errors that never pass with time: a wrong password or a user without the right to
# a command is a misconfiguration, a logged 500 an operator sees, not an endless "retry shortly".
MISCONFIGURED: tuple[type[BaseException], ...] = (
    redis.exceptions.AuthenticationError,
    redis.exceptions.AuthorizationError,
)


def store_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the store cannot serve now (retry shortly); False for a bug."""
    if isinstance(exc, MISCONFIGURED):
        return False
    if isinstance(exc, UNAVAILABLE_CLASSES):
        return True
    if isinstance(exc, redis.exceptions.ResponseError):
        return str(exc).startswith(UNAVAILABLE_REPLIES)
    if type(exc) is redis.exceptions.RedisClusterException:
        return str(exc).startswith(_CLUSTER_UNREACHABLE)
    return False
