"""Aggregation of feed entries into items, page by page, with no server-side state (pure).

A group is every entry with the same verb and object in the same time bucket (a fixed key, not
"within N seconds of each other"). Pages are cut at group boundaries: a cursor names the newest
member of the last group shown, every group whose newest member lies above it has been shown, and
only the cursor's own bucket needs a second look (its groups may have older members below the
cursor that belong to groups already shown).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from activities.ids import LOW_BITS


class Entry(NamedTuple):  # a tuple: built ~30 times per read, 4x cheaper than a frozen dataclass
    id: int
    key: Hashable  # (verb, object_type, object_id, bucket)
    actor_id: int


@dataclass
class PageCut:
    groups: list[list[Entry]] = field(default_factory=list)  # each newest first
    has_more: bool = False


def bucket_of(activity_id: int, window_ms: int) -> int:
    return (activity_id >> LOW_BITS) // window_ms


def group_key(verb: str, object_type: str, object_id: str, activity_id: int, window_ms: int):
    return (verb, object_type, object_id, bucket_of(activity_id, window_ms))


def bucket_floor_id(activity_id: int, window_ms: int) -> int:
    """The smallest id in the bucket of ``activity_id``."""
    return (bucket_of(activity_id, window_ms) * window_ms) << LOW_BITS


def bucket_ceiling_id(activity_id: int, window_ms: int) -> int:
    """The largest id in the bucket of ``activity_id``."""
    return ((bucket_of(activity_id, window_ms) + 1) * window_ms << LOW_BITS) - 1


def cut_page(
    entries: Sequence[Entry],
    *,
    limit: int,
    window_ms: int,
    exclude_keys: frozenset = frozenset(),
    exhausted: bool,
) -> PageCut | None:
    """Group newest-first ``entries`` into at most ``limit`` complete groups.

    ``exclude_keys`` are groups already shown (from the cursor's bucket). Returns None when more
    entries are needed to know that the page's groups are complete (and ``exhausted`` is False)."""
    groups: dict[Hashable, list[Entry]] = {}
    order: list[Hashable] = []
    stop_bucket: int | None = None
    has_more = False
    for entry in entries:
        if entry.key in exclude_keys:
            continue
        if stop_bucket is not None:
            # Every shown group lies in a bucket >= stop_bucket; an older entry starts a new page.
            if bucket_of(entry.id, window_ms) < stop_bucket:
                return PageCut([groups[k] for k in order], True)
            if entry.key in groups:
                groups[entry.key].append(entry)
            else:
                has_more = True
            continue
        if entry.key in groups:
            groups[entry.key].append(entry)
            continue
        groups[entry.key] = [entry]
        order.append(entry.key)
        if len(order) == limit:
            stop_bucket = bucket_of(entry.id, window_ms)
    if not exhausted:
        return None
    return PageCut([groups[k] for k in order], has_more)
