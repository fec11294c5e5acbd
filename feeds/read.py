"""The home feed selector: pushed feed + pulled celebrity timelines, merged, aggregated, paged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from follows.selectors import followee_ids_with_min_followers

from . import store
from .aggregation import Entry, PageCut, bucket_floor_id, cut_page, group_key
from .conf import FeedConf, get_conf
from .hydrate import hydrate
from .merge import merge_streams
from .rebuild import feed_ensure, feed_ttl

MAX_ACTORS = 5
PULL_AUTHORS_TTL = 60


@dataclass(frozen=True)
class FeedCursor:
    top: int  # the newest id when paging began: newer arrivals wait for the next fresh read
    last: int  # the newest member of the last group shown


def _entries(ids: list[int], bodies: dict[int, dict[str, Any]], window_ms: int) -> list[Entry]:
    out = []
    for aid in ids:
        body = bodies.get(aid)
        if body is None:  # deleted: never shown
            continue
        key = group_key(body["verb"], body["object_type"], body["object_id"], aid, window_ms)
        out.append(Entry(aid, key, body["actor"]["id"]))
    return out


def _item(group: list[Entry], bodies: dict[int, dict[str, Any]]) -> dict[str, Any]:
    item = dict(bodies[group[0].id])
    actors: list[dict[str, Any]] = []
    seen: set[int] = set()
    for entry in group:
        if entry.actor_id not in seen:
            seen.add(entry.actor_id)
            actors.append(bodies[entry.id]["actor"])
    item["actor_count"] = len(actors)
    item["actors"] = actors[:MAX_ACTORS]
    item["activity_ids"] = [str(e.id) for e in group]
    return item


def feed_items_after(*, user_id: int, after_id: int, limit: int = 100) -> list[dict[str, Any]]:
    """Feed entries newer than ``after_id``, oldest first, one item each: a reconnecting stream
    (Last-Event-ID) replays what it missed."""
    conf = get_conf()
    keys = feed_stream_keys(user_id, conf)
    ids = merge_streams(store.read_streams(keys, max_id=None, min_id=after_id + 1, count=limit))
    ids = sorted(ids)[-limit:]
    bodies = hydrate(ids)
    return [single_item(bodies[i]) for i in ids if i in bodies]


def single_item(body: dict[str, Any]) -> dict[str, Any]:
    """An activity as a feed item of its own (what the stream sends)."""
    return {**body, "actor_count": 1, "actors": [body["actor"]], "activity_ids": [body["id"]]}


def feed_stream_keys(user_id: int, conf: FeedConf | None = None) -> list[str]:
    """The sorted sets a reader's feed is merged from; a missing feed is rebuilt first (once).
    One Redis round trip when warm: the read mark, the feed check and the cached pull authors."""
    conf = conf or get_conf()
    threshold = conf.celebrity_threshold
    exists, pull, tag = store.begin_read(user_id, feed_ttl(conf), threshold)
    if not exists:
        feed_ensure(user_id=user_id, conf=conf)
    if pull is None:
        # Cached until the reader follows or unfollows, the threshold changes or any author
        # crosses it (the tag), or PULL_AUTHORS_TTL passes.
        pull = followee_ids_with_min_followers(follower_id=user_id, min_followers=threshold)
        store.set_pull_authors(user_id, tag, pull, PULL_AUTHORS_TTL)
    return [store.feed_key(user_id), *(store.timeline_key(a) for a in pull)]


def feed_page(
    *, user_id: int, limit: int, cursor: FeedCursor | None
) -> tuple[list[dict], FeedCursor | None]:
    """One page of aggregated items, newest first, and the cursor of the next page (or None)."""
    conf = get_conf()
    window_ms = conf.aggregation_window_seconds * 1000
    keys = feed_stream_keys(user_id, conf)
    bodies: dict[int, dict[str, Any]] = {}
    exclude: frozenset = frozenset()
    top = cursor.top if cursor else None
    if cursor is not None:
        # Groups of the cursor's bucket that had a member at or above it were shown already.
        shown = merge_streams(
            store.read_streams(
                keys,
                max_id=cursor.top,
                min_id=max(cursor.last, bucket_floor_id(cursor.last, window_ms)),
            )
        )
        bodies.update(hydrate(shown))
        exclude = frozenset(e.key for e in _entries(shown, bodies, window_ms))
    upper = cursor.last - 1 if cursor else None
    chunk = limit * 3 + 20
    entries: list[Entry] = []
    cut: PageCut | None = None
    while cut is None:
        streams = store.read_streams(keys, max_id=upper, count=chunk)
        full = [s[-1] for s in streams if len(s) == chunk]
        floor = max(full) if full else None  # below it, a capped read may have missed ids
        ids = [i for i in merge_streams(streams) if floor is None or i >= floor]
        if top is None:
            top = ids[0] if ids else 0
        # Hydrate a slice at a time: most pages are decided by the first limit + a few bodies.
        step = limit + 5
        for start in range(0, max(len(ids), 1), step):
            part = ids[start : start + step]
            bodies.update(hydrate([i for i in part if i not in bodies]))
            entries += _entries(part, bodies, window_ms)
            last_slice = start + step >= len(ids)
            cut = cut_page(
                entries,
                limit=limit,
                window_ms=window_ms,
                exclude_keys=exclude,
                exhausted=last_slice and floor is None,
            )
            if cut is not None:
                break
        if floor is not None:
            upper = floor - 1
    items = [_item(g, bodies) for g in cut.groups]
    next_cursor = (
        FeedCursor(top=top, last=cut.groups[-1][0].id) if cut.has_more and cut.groups else None
    )
    return items, next_cursor
