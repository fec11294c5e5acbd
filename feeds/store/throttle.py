"""Fixed throttle windows: one INCR + EXPIRE on one key per hit."""

from __future__ import annotations

import time

from django.conf import settings

from .connection import LOST, is_cluster, round_trip, scatter
from .errors import UNAVAILABLE_CLASSES
from .keys import throttle_key


def window_of(window_seconds: int, now: float) -> tuple[int, int]:
    """The fixed window ``now`` falls in: its number and the whole seconds it has left."""
    window_no = int(now // window_seconds)
    return window_no, max(1, int((window_no + 1) * window_seconds - now + 0.999))


def _counter_round(key: str, *commands: tuple) -> list | None:
    """One round trip of ``commands`` to the node of the counter ``key``. On Redis Cluster that
    node gets the read deadline (FEEDSITE_READ_DEADLINE_MS) and None means it did not answer in
    time (the throttle fails open, as when Redis is down): a hung node holding a counter never
    holds up requests for the client's timeouts and retries (seconds). A real error reply is
    raised."""
    if not is_cluster():
        return round_trip(*commands)
    replies, _ = scatter([(key, c) for c in commands], settings.FEEDSITE_READ_DEADLINE_MS / 1000)
    if replies[0] is LOST or isinstance(replies[0], UNAVAILABLE_CLASSES):
        return None
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    return replies


def hit_window(name: str, ident: str, window_seconds: int, amount: int = 1) -> tuple[int, int]:
    """Count ``amount`` hits in the current fixed window: (hits so far, seconds the window has
    left; 0 hits when a cluster node did not answer in time, see _counter_round). INCRBY +
    EXPIRE on one key; the window's number is part of the key, so a key that lost its expiry can
    never outlive its window (it is simply not read again): no one is locked out for good."""
    window_no, left = window_of(window_seconds, time.time())
    key = throttle_key(name, ident, window_no)
    replies = _counter_round(key, ("INCRBY", key, amount), ("EXPIRE", key, window_seconds * 2))
    return (0 if replies is None else int(replies[0])), left


def window_hits(name: str, ident: str, window_seconds: int) -> tuple[int, int]:
    """The hits counted so far in the current fixed window of (name, ident), without counting
    one (hit_window counts): (hits, seconds the window has left). One GET."""
    window_no, left = window_of(window_seconds, time.time())
    key = throttle_key(name, ident, window_no)
    replies = _counter_round(key, ("GET", key))
    return (0 if replies is None else int(replies[0] or 0)), left
