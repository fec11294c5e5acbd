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
