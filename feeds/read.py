"""The home feed selector: pushed feed + pulled celebrity timelines (authors' and objects'),
merged, aggregated, paged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from django.conf import settings

from activities.ids import MAX_ID
from feedsite.api.cursor import FeedCursor
from follows.selectors import hidden_author_ids, pull_sources

from . import store
from .aggregation import Entry, PageCut, bucket_ceiling_id, cut_page, group_key
from .conf import FeedConf, get_conf
from .hydrate import hydrate
from .rebuild import feed_ensure, feed_ttl, sources_rebuild
from .selectors import HomeRow, home_activities_page
from .store.feeds import pull_sources_from_cache
from .store.keys import object_digest, object_timeline_key_of

MAX_ACTORS = 5


_NOT_READ = object()


def hidden_authors(user_id: int, raw: Any = _NOT_READ) -> frozenset[int]:
    """Authors the user does not see (muted, blocked either way), from ``raw`` (what the read's
    first round trip found) or read now; a miss is filled from PostgreSQL and cached."""
    if raw is _NOT_READ:
        raw = store.get_hidden_raw(user_id)
    hidden = store.hidden_from_cache(raw)
    if hidden is None:
        hidden = frozenset(hidden_author_ids(user_id=user_id))
        store.set_hidden(
            user_id,
            sorted(hidden),
            settings.FEEDSITE_PULL_AUTHORS_CACHE_SECONDS,
            only_if_missing=True,
        )
    return hidden


def _entries(
    ids: list[int],
    bodies: dict[int, dict[str, Any]],
    window_ms: int,
    hidden: frozenset[int] = frozenset(),
) -> list[Entry]:
    """Entries of the ids whose bodies are known, in order. Deleted activities and those of
    hidden authors are left out here, at read time: the ids stay in the sorted sets, so cursors
    (ids) page exactly across a mute or block landing between two pages."""
    out = []
    for aid in ids:
        body = bodies.get(aid)
        if body is None or body["actor"]["id"] in hidden:  # deleted, or hidden: never shown
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


def single_item(body: dict[str, Any]) -> dict[str, Any]:
    """An activity as a feed item of its own (what the stream sends)."""
    return {**body, "actor_count": 1, "actors": [body["actor"]], "activity_ids": [body["id"]]}


def feed_sources_prepare(
    *,
    user_id: int,
    conf: FeedConf,
    feed_exists: bool,
    pull_raw: bytes | None,
    pull_version: int,
) -> list[str]:
    """The sorted sets a reader's feed is merged from, given what the read's first round trip
    found: the feed, the pull authors' timelines, then the pull objects' timelines. A missing
    feed is rebuilt first (once, under a lock); a missing or stale pull-source list is read from
    the database and cached. Nothing to do on a warm read."""
    if not feed_exists:
        feed_ensure(user_id=user_id, conf=conf)
    threshold = conf.celebrity_threshold
    tag = f"{threshold}.{pull_version}"
    sources = pull_sources_from_cache(pull_raw, tag)
    if sources is None:
        # Cached until the reader follows or unfollows (an author or an object), the threshold
        # changes or any author or object crosses it (the tag), or
        # FEEDSITE_PULL_AUTHORS_CACHE_SECONDS pass.
        pull, objects = pull_sources(user_id=user_id, min_followers=threshold)
        digests = [object_digest(*o) for o in objects]
        store.set_pull_authors(
            user_id, tag, pull, settings.FEEDSITE_PULL_AUTHORS_CACHE_SECONDS, digests
        )
        sources = pull, digests
    pull, digests = sources
    return [
        store.feed_key(user_id),
        *(store.timeline_key(a) for a in pull),
        *(object_timeline_key_of(d) for d in digests),
    ]


def feed_read_open(user_id: int, conf: FeedConf | None = None) -> list[str]:
    """Open a read of the user's feed and return the keys it merges: marks the read (the feed
    lives on), then feed_sources_prepare (rebuilds a missing feed, caches the pull-author list).
    Its own round trip: the stream and the browsable API; the lean feed read folds this round
    trip into its first one."""
    conf = conf or get_conf()
    exists, raw, version = store.begin_read(user_id, feed_ttl(conf))
    return feed_sources_prepare(
        user_id=user_id, conf=conf, feed_exists=exists, pull_raw=raw, pull_version=version
    )


class IdSource(Protocol):
    """Where a page's ids come from: the Redis feed store in service, SQL in the benchmark's
    comparison (same paging, aggregation and hydration; only the ids differ)."""

    def read(
        self, *, max_id: int | None, count: int, nbodies: int, shown: tuple[int, int] | None
    ) -> store.PageRead: ...


# Up to this many sources (the feed and 7 celebrity timelines, authors' and objects') a page is
# one script call; more go through the pipelined read, so that no reader can hold Redis for long.
MAX_SCRIPT_SOURCES = 8


def first_read(*, limit: int, cursor: FeedCursor | None, window_ms: int) -> dict[str, Any]:
    """The arguments of a page's first read (IdSource.read): the ids below the cursor, ``count``
    of each stream, enough to decide most pages in one round trip; the bodies of every id read,
    up to twice ``count`` (a page whose groups share one time bucket needs all of them to know
    its groups are complete); and with a cursor, the range of its bucket at or above it, whose
    groups were shown already. Pure."""
    count = limit + 10
    return {
        "max_id": cursor.last - 1 if cursor else None,
        "count": count,
        "nbodies": count * 2,
        "shown": (
            (min(cursor.top, bucket_ceiling_id(cursor.last, window_ms)), cursor.last)
            if cursor
            else None
        ),
    }


@dataclass
class RedisSource:
    keys: list[str]  # the reader's feed first
    mark_ttl: int | None = None  # the first read marks the feed read (and finds it missing)
    partial: bool = False  # a read left out sources whose cluster node did not answer in time
    # A first read already made (store.read_warm: with the prelude, in one round trip) and its
    # arguments: the page's first read returns it.
    first: store.PageRead | None = None
    first_args: dict[str, Any] | None = None

    def read(
        self, *, max_id: int | None, count: int, nbodies: int, shown: tuple[int, int] | None
    ) -> store.PageRead:
        args: dict[str, Any] = {
            "max_id": max_id,
            "count": count,
            "nbodies": nbodies,
            "shown": shown,
        }
        if self.first is not None:
            page, self.first = self.first, None
            if args == self.first_args:
                self.mark_ttl = None  # it marked the read
                return page
        if store.is_cluster():  # sources on several nodes: scatter-gather with a deadline
            deadline = settings.FEEDSITE_READ_DEADLINE_MS / 1000
            page = store.read_page_gathered(
                self.keys, **args, mark_ttl=self.mark_ttl, deadline=deadline
            )
            if page.partial and not self.partial:
                store.count_stat_best_effort("read_partial")
            self.partial |= page.partial
        elif len(self.keys) <= MAX_SCRIPT_SOURCES:
            page = store.read_page(self.keys, **args, mark_ttl=self.mark_ttl)
        else:
            page = store.read_page_pipelined(self.keys, **args, mark_ttl=self.mark_ttl)
        self.mark_ttl = None
        return page


# The cursor's bucket below the edge is read back from PostgreSQL up to this many activities
# (its groups were shown on earlier pages; see first_read).
DEEP_SHOWN_MAX = 1_000


def deep_bodies(rows: list[HomeRow], bodies: dict[int, dict[str, Any]]) -> list[int]:
    """The ids of rows read from PostgreSQL, newest first; their bodies go into ``bodies``."""
    for row in rows:
        if row.id not in bodies:
            bodies[row.id] = orjson.loads(row.body)
    return [row.id for row in rows]


def feed_page(
    *,
    user_id: int,
    limit: int,
    cursor: FeedCursor | None,
    source: IdSource | None = None,
    hidden: frozenset[int] | None = None,
    window_seconds: int | None = None,
) -> tuple[list[dict], FeedCursor | None]:
    """One page of aggregated items, newest first, and the cursor of the next page (or None).
    On a warm feed one round trip (store.read_page) decides most pages: the ids of every source
    and the bodies of the first ones. A page that needs more (large groups) reads on.

    The whole history: once a read reaches the end of what the Redis sources hold (the edge,
    store.stream_edge: the oldest entry of the reader's feed, or of a pull author's or object's
    timeline that was trimmed), everything below the edge comes from PostgreSQL
    (selectors.home_activities_page: the reader's and their followees' live home activities
    and those about the objects they follow, whenever the follow began), in the same entries: a group spanning the edge is one item,
    and every id is read from exactly one side. The next cursor carries the edge."""
    conf = get_conf()
    window_ms = (window_seconds or conf.aggregation_window_seconds) * 1000
    if source is None:
        source = RedisSource(feed_read_open(user_id, conf))
    if hidden is None:
        hidden = hidden_authors(user_id)
    raw: dict[int, bytes | None] = {}
    bodies: dict[int, dict[str, Any]] = {}
    top = cursor.top if cursor else None
    edge = cursor.edge if cursor else None
    plan = first_read(limit=limit, cursor=cursor, window_ms=window_ms)
    shown_range, upper = plan["shown"], plan["max_id"]
    count, nbodies = plan["count"], plan["nbodies"]
    exclude: frozenset = frozenset()
    if shown_range is not None and edge is not None and shown_range[1] < edge:
        # The cursor's bucket reaches below the edge: that part was shown from PostgreSQL.
        hi, lo = shown_range
        rows = home_activities_page(
            user_id=user_id, limit=DEEP_SHOWN_MAX, before_id=min(hi + 1, edge), min_id=lo
        )
        shown = deep_bodies(rows, bodies)
        exclude = frozenset(e.key for e in _entries(shown, bodies, window_ms, hidden))
        shown_range = (hi, edge) if hi >= edge else None
    step = limit + 5  # entries aggregated at a time: most pages are decided by the first ones
    entries: list[Entry] = []
    cut: PageCut | None = None
    timelines_rebuilt = False
    # A page wholly below the edge reads Redis only for the cursor's bucket above the edge.
    redis_done = edge is not None and upper is not None and upper < edge and shown_range is None
    while cut is None and not redis_done:
        page = source.read(max_id=upper, count=count, nbodies=nbodies, shown=shown_range)
        if page.feed_missing:  # never built, expired or evicted: rebuild (once), read again
            feed_ensure(user_id=user_id, conf=conf)
            continue
        if page.sources_missing and not timelines_rebuilt:
            # A pull author's or object's timeline was lost (evicted, flushed) or never built:
            # rebuilt from PostgreSQL, then the page is read again.
            sources_rebuild(user_id=user_id, keys=page.sources_missing)
            timelines_rebuilt = True
            continue
        raw.update(page.bodies)
        if shown_range is not None:
            bodies.update(hydrate(page.shown, raw))
            shown_keys = (e.key for e in _entries(page.shown, bodies, window_ms, hidden))
            exclude = exclude.union(shown_keys)
            shown_range = None
        ids, floor = page.ids, page.floor  # below the floor, a capped read may have missed ids
        if top is None:
            top = ids[0] if ids else None
        if page.edge is not None:
            edge = page.edge if edge is None else max(edge, page.edge)
        if edge is not None:
            ids = [i for i in ids if i >= edge]  # below the edge: PostgreSQL's
            if floor is not None and floor <= edge:
                floor = None
        redis_done = floor is None
        for start in range(0, max(len(ids), 1), step):
            part = ids[start : start + step]
            bodies.update(hydrate([i for i in part if i not in bodies], raw))
            entries += _entries(part, bodies, window_ms, hidden)
            last_slice = start + step >= len(ids)
            cut = cut_page(
                entries,
                limit=limit,
                window_ms=window_ms,
                exclude_keys=exclude,
                exhausted=last_slice and floor is None and edge is None,
            )
            if cut is not None:
                break
        if floor is not None:
            upper = floor - 1
            count = limit * 3 + 20  # large groups: read on in bigger steps
    if cut is None and edge is not None:  # past the edge: PostgreSQL
        before = edge if upper is None else min(upper + 1, edge)
        want = limit + 10
        while cut is None:
            rows = home_activities_page(user_id=user_id, limit=want, before_id=before)
            ids = deep_bodies(rows, bodies)
            if top is None and ids:
                top = ids[0]
            entries += _entries(ids, bodies, window_ms, hidden)
            cut = cut_page(
                entries,
                limit=limit,
                window_ms=window_ms,
                exclude_keys=exclude,
                exhausted=len(rows) < want,
            )
            if rows:
                before = rows[-1].id
            want = limit * 3 + 20
    if cut is None:  # (not reached: the Redis loop ends with a cut or an edge)
        cut = PageCut()
    items = [_item(g, bodies) for g in cut.groups]
    next_cursor = (
        FeedCursor(top=top or 0, last=cut.groups[-1][0].id, edge=edge)
        if cut.has_more and cut.groups
        else None
    )
    if getattr(source, "partial", False):
        # Some sources did not answer: what they hold is unknown, so the next page must not
        # start below anything of theirs. It starts where this one did (a later read shows
        # what was missing); a first page's next starts from the top again.
        next_cursor = cursor or FeedCursor(top=MAX_ID, last=MAX_ID + 1)
    return items, next_cursor
