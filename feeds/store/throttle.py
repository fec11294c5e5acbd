"""Fixed throttle windows: one INCR + EXPIRE on one key per hit."""

from __future__ import annotations

import time

from .connection import client
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
    left)."""
    pipe = client().pipeline(transaction=False)
    left = _queue_hit(pipe, name, ident, window_seconds, time.time(), amount)
    hits, _ = pipe.execute()
    return int(hits), left
