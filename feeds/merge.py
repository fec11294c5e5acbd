"""Merging id streams (pure)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence


def merge_streams(streams: Iterable[Sequence[int]]) -> list[int]:
    """Merge newest-first id lists into one newest-first list without duplicates (an activity can
    be both pushed and pulled when its author crossed the celebrity threshold)."""
    merged: list[int] = []
    last = None
    for aid in heapq.merge(*streams, reverse=True):
        if aid != last:
            merged.append(aid)
            last = aid
    return merged


def merge_to_floor(streams: Sequence[Sequence[int]], count: int) -> tuple[list[int], int | None]:
    """Merge newest-first streams, each read up to ``count`` ids, down to the floor: the highest
    last id of a stream that returned ``count`` ids (below it that stream may hold ids that were
    not read). Returns (merged ids down to the floor, the floor or None). The store's
    read-page script does the same in Redis."""
    full = [s[-1] for s in streams if len(s) == count]
    floor = max(full) if full else None
    return [i for i in merge_streams(streams) if floor is None or i >= floor], floor
