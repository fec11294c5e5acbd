"""Fixed throttle windows: one INCR + EXPIRE on one key per hit."""

from __future__ import annotations

import time

from django.conf import settings

from .connection import LOST, client, is_cluster, scatter
from .errors import UNAVAILABLE_CLASSES
from .keys import throttle_key


def window_of(window_seconds: int, now: float) -> tuple[int, int]:
    """The fixed window ``now`` falls in: its number and the whole seconds it has left."""
    window_no = int(now // window_seconds)
    return window_no, max(1, int((window_no + 1) * window_seconds - now + 0.999))


def _queue_hit(
    pipe, name: str, ident: str, window_seconds: int, now: float, amount: int = 1
) -> int:
    """Queue one hit of a fixed window; returns the seconds the window has left. The window's
    number is part of the key, so a key that lost its expiry can never outlive its window (it is
    simply not read again): a user can not be locked out for good. INCR + EXPIRE, one key."""
    window_no, left = window_of(window_seconds, now)
    key = throttle_key(name, ident, window_no)
    pipe.incrby(key, amount)
    pipe.expire(key, window_seconds * 2)
    return left


def hit_window(name: str, ident: str, window_seconds: int, amount: int = 1) -> tuple[int, int]:
    """Count ``amount`` hits in the current fixed window: (hits so far, seconds the window has
    left). On Redis Cluster the counter's node gets the read deadline (FEEDSITE_READ_DEADLINE_MS)
    and a node that does not answer in time counts nothing (0 hits: the throttle fails open, as
    when Redis is down), so a hung node holding a user's counter never holds up their requests
    for the client's timeouts and retries (seconds); a real error reply is raised."""
    window_no, left = window_of(window_seconds, time.time())
    key = throttle_key(name, ident, window_no)
    commands = [(key, ("INCRBY", key, amount)), (key, ("EXPIRE", key, window_seconds * 2))]
    if is_cluster():
        replies, _ = scatter(commands, settings.FEEDSITE_READ_DEADLINE_MS / 1000)
        hits = replies[0]
        if hits is LOST or isinstance(hits, UNAVAILABLE_CLASSES):
            return 0, left
        if isinstance(hits, BaseException):
            raise hits
        return int(hits), left
    pipe = client().pipeline(transaction=False)
    left = _queue_hit(pipe, name, ident, window_seconds, time.time(), amount)
    hits, _ = pipe.execute()
    return int(hits), left
