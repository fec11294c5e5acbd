"""Time-ordered 53-bit activity ids (pure).

An id is ``(milliseconds since 2000-01-01 UTC) << 10 | low`` where ``low`` is a 10-bit tiebreak.
Ids order like ``time`` at millisecond precision with a total tiebreak, and every id is below 2**53,
so it is exact when Redis stores it as a sorted-set score (a double). A 64-bit snowflake is not.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
LOW_BITS = 10
LOW_MASK = (1 << LOW_BITS) - 1
MAX_MS = (1 << (53 - LOW_BITS)) - 1  # about 278 years after EPOCH
MAX_ID = (1 << 53) - 1


def time_to_ms(moment: datetime) -> int:
    """Milliseconds between EPOCH and ``moment`` (aware); ValueError outside the id range."""
    if moment.tzinfo is None:
        raise ValueError("time must be timezone-aware")
    delta = moment - EPOCH
    ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if not 0 <= ms <= MAX_MS:
        raise ValueError("time must be between 2000-01-01 and 2278-01-01")
    return ms


def make_id(moment: datetime, low: int | None = None) -> int:
    """An id for an activity at ``moment``; ``low`` is random unless given (tests pin it)."""
    if low is None:
        low = secrets.randbelow(LOW_MASK + 1)
    if not 0 <= low <= LOW_MASK:
        raise ValueError("low must fit in 10 bits")
    return (time_to_ms(moment) << LOW_BITS) | low


def id_to_time(activity_id: int) -> datetime:
    """The millisecond the id was made for."""
    return EPOCH + timedelta(milliseconds=activity_id >> LOW_BITS)


def truncate_to_ms(moment: datetime) -> datetime:
    """``moment`` without sub-millisecond digits, so that stored time and id agree exactly."""
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)
