"""THE Redis module: every key is built here and every Redis command is sent from here.

Layout (prefix from FEEDSITE_KEY_PREFIX, default ``fs``):
  {p}:feed:{user_id}   sorted set, member = score = activity id (53-bit, exact in a double)
  {p}:tl:{user_id}     the author's own timeline, same shape (pull source, backfill source)
  {p}:act:{id}         the activity body as JSON, stored once, with a TTL
  {p}:deliv:{job}:{n}  delivery counter of one batch (poison guard)
Every command but one touches a single key, and multi-key work is a non-transactional pipeline,
which redis-py's cluster client splits per node. The exception is the feed read's page script
(_READ_PAGE_LUA), which reads a reader's sources and their bodies in one call on one Redis; on
Redis Cluster it becomes two parallel rounds (read_page_pipelined: the sources, then the bodies).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import hiredis
import redis
from django.conf import settings
from django_redis import get_redis_connection

from .merge import merge_streams, merge_to_floor

T = TypeVar("T")

# Errors a batch retries. Every Redis error, not only connection ones: OOM ("used memory >
# maxmemory"), LOADING, and Cluster MOVED/TRYAGAIN arrive as error replies and pass with time.
# A permanent one (WRONGTYPE) spends the bounded retry budget and becomes a dead letter.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError,)


_client: redis.Redis | None = None


def client() -> redis.Redis:
    """The process's Redis client (django-redis' pool; redis-py resets it after a fork)."""
    global _client
    if _client is None:
        _client = get_redis_connection("default")
    return _client


def _p() -> str:
    return settings.FEEDSITE_KEY_PREFIX


def feed_key(user_id: int) -> str:
    return f"{_p()}:feed:{user_id}"


def timeline_key(user_id: int) -> str:
    return f"{_p()}:tl:{user_id}"


def body_key(activity_id: int) -> str:
    return f"{_p()}:act:{activity_id}"


def deliveries_key(job_id: int, batch_no: int) -> str:
    return f"{_p()}:deliv:{job_id}:{batch_no}"


def unfollows_key(author_id: int) -> str:
    return f"{_p()}:unf:{author_id}"


# One command per feed instead of ZADD + ZREMRANGEBYRANK: half the commands to pack, send and
# parse (the client's cost dominates a 1,000-feed batch). One key per call: Redis Cluster safe.
#
# Only feeds that exist are written: a feed that is missing (never built, evicted, or expired
# because its owner stopped reading) would otherwise hold a partial feed. It is rebuilt from
# PostgreSQL on its owner's next read, so fan-out cost follows active readers, not followers.
# ARGV: cap, then ids. Returns 1 when written, 0 when skipped.
_ADD_CAPPED_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cap = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i]) end
if redis.call('ZCARD', KEYS[1]) > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(cap + 1))
end
return 1
"""
# A built feed always exists: an empty one holds only this member (score 0), so a reader with no
# follows and no posts is not rebuilt on every read. When the feed is full, trimming removes it
# first (lowest score), and a full feed needs no marker.
SENTINEL = "0"
_script_shas: dict[str, str] = {}


def _round_trip(*commands: tuple) -> list:
    """Send ``commands`` in one write on a pooled connection and read their raw replies: the
    hot read path's pipeline without redis-py's per-command bookkeeping (response callbacks,
    command stack, retry wrappers), which cost more CPU than the round trip itself. A broken
    connection is dropped and the round sent once more on a fresh one; an error reply is
    raised after every reply has been read, so the connection goes back to the pool clean."""
    pool = client().connection_pool
    for attempt in (1, 2):
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(map(hiredis.pack_command, commands))])
            replies = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            conn.disconnect()
            if attempt == 2:
                raise
            continue
        finally:
            pool.release(conn)
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                raise reply
        return replies
    raise AssertionError("unreachable")


def _with_script(source: str, run: Callable[[str], T]) -> T:
    """``run(sha)`` with the script loaded (EVALSHA: the source is sent once per process); when
    the server lost its script cache (restart, SCRIPT FLUSH), load it again, once."""
    for attempt in (1, 2):
        sha = _script_shas.get(source)
        if sha is None:
            sha = _script_shas[source] = client().script_load(source)
        try:
            return run(sha)
        except redis.exceptions.NoScriptError:
            _script_shas.pop(source, None)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _zadd_capped(pipe, key: str, ids: Iterable[int], cap: int) -> None:
    mapping = {str(i): i for i in ids}
    if mapping:
        pipe.zadd(key, mapping)
        # Trim by rank in the same pipeline: the feed never overshoots its cap.
        pipe.zremrangebyrank(key, 0, -(cap + 1))


def push_to_feeds(
    user_ids: Sequence[int], activity_ids: Sequence[int], cap: int, author_id: int
) -> tuple[int, int, bool]:
    """Add activities to many existing feeds: one pipelined round trip (one capped add per
    feed). Returns (feeds written, the author's unfollow counter, whether the first activity's
    body is still cached), the last two read after the writes in the same round trip."""

    def run(sha: str) -> list:
        pipe = client().pipeline(transaction=False)
        for uid in user_ids:
            pipe.execute_command("EVALSHA", sha, 1, feed_key(uid), cap, *activity_ids)
        pipe.get(unfollows_key(author_id))
        pipe.exists(body_key(activity_ids[0]))
        return pipe.execute()

    *written, unfollows, body = _with_script(_ADD_CAPPED_LUA, run)
    return sum(written), int(unfollows or 0), bool(body)


def remove_from_feeds(user_ids: Sequence[int], activity_ids: Sequence[int]) -> None:
    if not user_ids or not activity_ids:
        return
    members = [str(i) for i in activity_ids]
    pipe = client().pipeline(transaction=False)
    for uid in user_ids:
        pipe.zrem(feed_key(uid), *members)
    pipe.execute()


def add_to_feed(user_id: int, activity_ids: Sequence[int], cap: int) -> bool:
    """Add to one feed if it exists (see _ADD_CAPPED_LUA); True when written."""
    if not activity_ids:
        return False
    written, _, _ = push_to_feeds([user_id], activity_ids, cap, user_id)
    return bool(written)


def write_feed(user_id: int, activity_ids: Sequence[int], cap: int, ttl: int) -> None:
    """A rebuilt feed: the ids (merged with what is there: concurrent fan-out is kept), the
    built marker, the cap and the inactivity TTL, atomically on one key."""
    key = feed_key(user_id)
    pipe = client().pipeline(transaction=True)
    pipe.zadd(key, {SENTINEL: 0, **{str(i): i for i in activity_ids}})
    pipe.zremrangebyrank(key, 0, -(cap + 1))
    if ttl:
        pipe.expire(key, ttl)
    pipe.execute()


def write_timeline(author_id: int, activity_ids: Sequence[int], cap: int) -> None:
    if not activity_ids:
        return
    pipe = client().pipeline(transaction=False)
    _zadd_capped(pipe, timeline_key(author_id), activity_ids, cap)
    pipe.execute()


def touch_feed(user_id: int, ttl: int) -> bool:
    """Mark a read (the feed lives ``ttl`` more seconds); False when the feed does not exist."""
    key = feed_key(user_id)
    return bool(client().expire(key, ttl) if ttl else client().exists(key))


def rebuild_lock_key(user_id: int) -> str:
    return f"{_p()}:rebuild:{user_id}"


def lock_rebuild(user_id: int, seconds: int = 30) -> bool:
    return bool(client().set(rebuild_lock_key(user_id), "1", nx=True, ex=seconds))


def unlock_rebuild(user_id: int) -> None:
    client().delete(rebuild_lock_key(user_id))


def rebuild_locked(user_id: int) -> bool:
    return bool(client().exists(rebuild_lock_key(user_id)))


def stats_key(name: str) -> str:
    return f"{_p()}:stats:{name}"


def count_stat(name: str, amount: int = 1) -> None:
    client().incrby(stats_key(name), amount)


# Latency histograms kept in Redis hashes, so every process (web workers, pool children) adds to
# one set of counters that /metrics reads. Bucket bounds in milliseconds.
LATENCY_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


def _queue_histogram(pipe, name: str, values: Sequence[float]) -> None:
    """Add latency observations (ms) to a histogram hash: one HINCRBY per bucket touched."""
    key = stats_key(name)
    buckets: dict[str, int] = {}
    for value in values:
        bucket = next((f"le_{b}" for b in LATENCY_BUCKETS_MS if value <= b), "le_inf")
        buckets[bucket] = buckets.get(bucket, 0) + 1
    for bucket, count in buckets.items():
        pipe.hincrby(key, bucket, count)
    pipe.hincrbyfloat(key, "sum", sum(values) / 1000)
    pipe.hincrby(key, "count", len(values))


def observe(name: str, ms: float, counters: dict[str, int] | None = None) -> None:
    """One observation of a latency histogram (and optional counters): one round trip."""
    pipe = client().pipeline(transaction=False)
    _queue_histogram(pipe, name, [ms])
    for counter, amount in (counters or {}).items():
        pipe.incrby(stats_key(counter), amount)
    pipe.execute()


_buffer_lock = threading.Lock()
_buffered: dict[str, list[float]] = {}
_flushed_at = 0.0


def observe_buffered(name: str, ms: float, flush_every: float = 1.0) -> None:
    """observe() for hot paths: observations are kept in the process and written at most once a
    second, in one round trip, instead of one round trip per request."""
    with _buffer_lock:
        _buffered.setdefault(name, []).append(ms)
    flush_buffered(older_than=flush_every)


def flush_buffered(older_than: float = 0.0) -> None:
    global _flushed_at
    with _buffer_lock:
        now = time.monotonic()
        if now - _flushed_at < older_than:
            return
        pending = {k: v for k, v in _buffered.items() if v}
        _buffered.clear()
        _flushed_at = now
    pipe = client().pipeline(transaction=False)
    for hist, values in pending.items():
        _queue_histogram(pipe, hist, values)
    pipe.execute()


def read_histogram(name: str) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in client().hgetall(stats_key(name)).items()}


def read_stat(name: str) -> int:
    return int(client().get(stats_key(name)) or 0)


def remove_from_timeline(author_id: int, activity_id: int) -> None:
    client().zrem(timeline_key(author_id), str(activity_id))


def feed_oldest_id(user_id: int) -> int | None:
    """The lowest id still in a feed (None if empty): bounds an unfollow purge to the feed window."""
    rows = client().zrangebyscore(feed_key(user_id), "(0", "+inf", start=0, num=1)
    return int(rows[0]) if rows else None


def feed_ids(user_id: int) -> list[int]:
    """Every id in a feed, newest first (feeds are capped, so this is bounded)."""
    return [int(m) for m in client().zrevrangebyscore(feed_key(user_id), "+inf", "(0")]


def timeline_ids(author_id: int) -> list[int]:
    return [int(m) for m in client().zrevrange(timeline_key(author_id), 0, -1)]


def set_bodies(bodies: Mapping[int, bytes]) -> None:
    if not bodies:
        return
    ttl = settings.FEEDSITE_BODY_TTL_SECONDS
    pipe = client().pipeline(transaction=False)
    for aid, body in bodies.items():
        pipe.set(body_key(aid), body, ex=ttl)
    pipe.execute()


def get_bodies(activity_ids: Sequence[int]) -> dict[int, bytes]:
    """Bodies found in the cache; one pipelined round trip (GETs, not a cross-slot MGET)."""
    if not activity_ids:
        return {}
    pipe = client().pipeline(transaction=False)
    for aid in activity_ids:
        pipe.get(body_key(aid))
    return {aid: raw for aid, raw in zip(activity_ids, pipe.execute(), strict=True) if raw}


def delete_body(activity_id: int) -> None:
    client().delete(body_key(activity_id))


def begin_batch(job_id: int, batch_no: int, author_id: int) -> tuple[int, int]:
    """Count one delivery of a batch (the counter lives a day, far beyond any retry budget) and
    read the author's unfollow counter, in one round trip: (deliveries, unfollow counter)."""
    key = deliveries_key(job_id, batch_no)
    pipe = client().pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, 86_400)
    pipe.get(unfollows_key(author_id))
    deliveries, _, unfollows = pipe.execute()
    return int(deliveries), int(unfollows or 0)


def bump_unfollow_counter(author_id: int) -> None:
    """Called after an unfollow commits, before its purge: a batch that read the author's
    followers before the unfollow sees the counter move and re-checks whom it wrote to."""
    client().incr(unfollows_key(author_id))


def ping() -> bool:
    return bool(client().ping())


def read_streams(
    keys: Sequence[str], *, max_id: int | None, min_id: int | None = None, count: int | None = None
) -> list[list[int]]:
    """Newest-first ids of several sorted sets, ids in [min_id, max_id], at most ``count`` each:
    one pipelined round trip (one single-key command per set)."""
    hi = "+inf" if max_id is None else max_id
    lo = "(0" if min_id is None else max(min_id, 1)  # never the built marker
    pipe = client().pipeline(transaction=False)
    for key in keys:
        if count is None:
            pipe.zrevrangebyscore(key, hi, lo)
        else:
            pipe.zrevrangebyscore(key, hi, lo, start=0, num=count)
    return [[int(m) for m in members] for members in pipe.execute()]


def live_channel(author_id: int) -> str:
    return f"{_p()}:live:{author_id}"


def streams_key(user_id: int) -> str:
    return f"{_p()}:streams:{user_id}"


def announce(author_id: int, activity_id: int) -> None:
    """Tell open streams of the author's followers (and the author) that an activity landed."""
    client().publish(live_channel(author_id), str(activity_id))


def async_client():
    """A redis.asyncio client for the SSE stream (its own pool, on the event loop)."""
    import redis.asyncio

    return redis.asyncio.from_url(settings.REDIS_URL)


async def stream_register(r, user_id: int, stream_id: str, now: float, stale_after: float) -> int:
    """Register (or refresh) an open stream; returns how many of the user's streams are live."""
    key = streams_key(user_id)
    pipe = r.pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", now - stale_after)
    pipe.zadd(key, {stream_id: now})
    pipe.expire(key, int(stale_after) + 60)
    pipe.zcard(key)
    return int((await pipe.execute())[-1])


async def stream_unregister(r, user_id: int, stream_id: str) -> None:
    await r.zrem(streams_key(user_id), stream_id)


def pull_authors_key(user_id: int) -> str:
    return f"{_p()}:pull:{user_id}"


def pull_version_key() -> str:
    return f"{_p()}:pullver"


def bump_pull_version() -> None:
    """An author crossed the celebrity threshold: every cached pull-author list is stale."""
    client().incr(pull_version_key())


def begin_read(user_id: int, ttl: int) -> tuple[bool, bytes | None, int]:
    """Mark a read (the feed lives ``ttl`` more seconds) and fetch the cached pull-author list
    and its version: (feed exists, raw list, version), one round trip."""
    pipe = client().pipeline(transaction=False)
    if ttl:
        pipe.expire(feed_key(user_id), ttl)
    else:
        pipe.exists(feed_key(user_id))
    _queue_pull_authors(pipe, user_id)
    exists, raw, version = pipe.execute()
    return bool(exists), raw, int(version or 0)


def _queue_pull_authors(pipe, user_id: int) -> None:
    """Queue the reads of the cached pull-author list and its version: two replies."""
    pipe.get(pull_authors_key(user_id))
    pipe.get(pull_version_key())


def set_pull_authors(user_id: int, tag: str, ids: Sequence[int], ttl: int) -> None:
    client().set(pull_authors_key(user_id), f"{tag}:{','.join(map(str, ids))}", ex=ttl)


def drop_pull_authors(user_id: int) -> None:
    client().delete(pull_authors_key(user_id))


def throttle_key(name: str, ident: str, window_no: int) -> str:
    return f"{_p()}:throttle:{name}:{ident}:{window_no}"


def _queue_hit(pipe, name: str, ident: str, window_seconds: int, now: float) -> int:
    """Queue one hit of a fixed window; returns the seconds the window has left. The window's
    number is part of the key, so a key that lost its expiry can never outlive its window (it is
    simply not read again): a user can not be locked out for good. INCR + EXPIRE, one key."""
    window_no, left = _window(window_seconds, now)
    key = throttle_key(name, ident, window_no)
    pipe.incr(key)
    pipe.expire(key, window_seconds * 2)
    return left


def _window(window_seconds: int, now: float) -> tuple[int, int]:
    """The fixed window ``now`` falls in: its number and the whole seconds it has left."""
    window_no = int(now // window_seconds)
    return window_no, max(1, int((window_no + 1) * window_seconds - now + 0.999))


def hit_window(name: str, ident: str, window_seconds: int) -> tuple[int, int]:
    """Count one hit in the current fixed window: (hits so far, seconds the window has left)."""
    pipe = client().pipeline(transaction=False)
    left = _queue_hit(pipe, name, ident, window_seconds, time.time())
    hits, _ = pipe.execute()
    return int(hits), left


# --- the warm feed read: two round trips -------------------------------------------------------


def token_key(digest: str) -> str:
    return f"{_p()}:tok:{digest}"


def token_get(digest: str) -> bytes | None:
    return client().get(token_key(digest))


def token_set(digest: str, value: bytes, ttl: int) -> None:
    client().set(token_key(digest), value, ex=ttl)


def token_delete(digests: Sequence[str]) -> None:
    if digests:
        client().delete(*(token_key(d) for d in digests))


@dataclass(frozen=True)
class ReadPrelude:
    """What the first round trip of a feed read brings back."""

    token: bytes | None  # the cached token entry (None: not cached, or revoked)
    hits: int  # throttle hits in the current window, this one included
    window_left: int  # seconds until the throttle window ends
    pull_raw: bytes | None  # the cached pull-author list ("tag:id,id,...")
    pull_version: int


def read_prelude(*, digest: str, user_id: int, throttle: tuple[str, str, int]) -> ReadPrelude:
    """Round trip 1 of a warm read, one pipeline of single-key commands (one parallel round on a
    cluster): the token entry (checks the caller's claimed user id), the throttle hit
    (``throttle`` = scope, ident, window seconds), the pull-author list and its version. Nothing
    here writes to the claimed user's keys: the claim is confirmed only by this round trip's
    answer (the read mark rides on the page read, see read_page's ``mark_ttl``)."""
    name, ident, window_seconds = throttle
    window_no, left = _window(window_seconds, time.time())
    hit_key = throttle_key(name, ident, window_no)
    token, hits, _, pull_raw, version = _round_trip(
        ("GET", token_key(digest)),
        ("INCR", hit_key),
        ("EXPIRE", hit_key, window_seconds * 2),
        ("GET", pull_authors_key(user_id)),
        ("GET", pull_version_key()),
    )
    return ReadPrelude(token, int(hits), left, pull_raw, int(version or 0))


def pull_authors_from_cache(raw: bytes | None, tag: str) -> list[int] | None:
    """The cached pull-author ids, or None when absent or cached under another tag (another
    threshold, or before some author crossed it)."""
    if raw is None:
        return None
    cached_tag, _, ids = raw.decode().partition(":")
    if cached_tag != tag:
        return None
    return [int(i) for i in ids.split(",") if i]


# Round trip 2: the page. Each stream (the reader's feed, the pull authors' timelines) is read
# newest first, at most `count` ids at or below `hi`; they are merged without duplicates down to
# the floor (the highest last id of a stream that returned `count` ids: below it a stream may
# hold ids that were not read), and the bodies of the newest `nbodies` come along. With a
# "shown" range (a cursor's bucket), its merged ids and all their bodies too.
# KEYS: the streams, the reader's feed first. ARGV: body key prefix, nbodies, hi, count, shown hi,
# shown lo (or '', ''), read-mark seconds (or ''). Returns {merged ids, floor or '', shown ids,
# body ids, bodies, 1}, or 0 last when the feed to mark does not exist.
# Body keys are read from the script (not declared in KEYS): that is fine on one Redis; on
# Redis Cluster the same two phases are two parallel rounds (streams, then bodies).
_READ_PAGE_LUA = """
local prefix, nbodies, hi, count = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
-- The read mark, when asked for (ARGV[7]: seconds, 0 = check only): the reader's feed (KEYS[1])
-- lives that much longer; a missing feed answers at once, to be rebuilt.
if ARGV[7] ~= '' then
  local live
  if tonumber(ARGV[7]) > 0 then
    live = redis.call('EXPIRE', KEYS[1], ARGV[7])
  else
    live = redis.call('EXISTS', KEYS[1])
  end
  if live == 0 then return {{}, '', {}, {}, {}, 0} end
end
-- A k-way merge of newest-first lists, distinct ids down to `floor` (a sort with a comparator
-- costs ~2 ms for 300 ids in Redis' Lua; this touches each id once).
local function merge(lists, floor)
  local pos, heads, out, last = {}, {}, {}, nil
  for i, l in ipairs(lists) do
    pos[i] = 1
    heads[i] = l[1] and tonumber(l[1])
  end
  while true do
    local best, bi = nil, nil
    for i = 1, #lists do
      local h = heads[i]
      if h and (best == nil or h > best) then best, bi = h, i end
    end
    if bi == nil or (floor and best < floor) then break end
    if best ~= last then
      last = best
      out[#out + 1] = lists[bi][pos[bi]]
    end
    pos[bi] = pos[bi] + 1
    local nxt = lists[bi][pos[bi]]
    heads[bi] = nxt and tonumber(nxt)
  end
  return out
end
local streams, floor = {}, nil
for i, key in ipairs(KEYS) do
  local ids = redis.call('ZREVRANGEBYSCORE', key, hi, '(0', 'LIMIT', 0, count)
  streams[i] = ids
  if #ids == count then
    local last = tonumber(ids[#ids])
    if floor == nil or last > floor then floor = last end
  end
end
local merged = merge(streams, floor)
local wanted = {}
for i = 1, math.min(nbodies, #merged) do wanted[i] = merged[i] end
local shown = {}
if ARGV[5] ~= '' then
  local lists = {}
  for i, key in ipairs(KEYS) do
    lists[i] = redis.call('ZREVRANGEBYSCORE', key, ARGV[5], ARGV[6])
  end
  shown = merge(lists, nil)
  local have = {}
  for _, m in ipairs(wanted) do have[m] = true end
  for _, m in ipairs(shown) do
    if not have[m] then wanted[#wanted + 1] = m end
  end
end
local bodies = {}
for i, m in ipairs(wanted) do bodies[i] = redis.call('GET', prefix .. m) end
return {merged, floor and string.format('%d', floor) or '', shown, wanted, bodies, 1}
"""


@dataclass
class PageRead:
    ids: list[int]  # merged, newest first, distinct, complete down to the floor
    floor: int | None  # None: every stream was read to its end (at or below max_id)
    shown: list[int]  # ids of the "shown" range, newest first, distinct
    bodies: dict[int, bytes | None]  # raw bodies of ids read along (None: not cached)
    feed_missing: bool = False  # the read mark found no feed: nothing else was read


def read_page(
    keys: Sequence[str],
    *,
    max_id: int | None,
    count: int,
    nbodies: int,
    shown: tuple[int, int] | None = None,
    mark_ttl: int | None = None,
) -> PageRead:
    """Round trip 2 of a feed read (see _READ_PAGE_LUA): the merged ids of every stream at or
    below ``max_id`` (at most ``count`` read from each), the bodies of the newest ``nbodies``,
    and with ``shown`` = (hi, lo) the ids in that range and all their bodies."""
    hi = "+inf" if max_id is None else str(max_id)
    args = [f"{_p()}:act:", nbodies, hi, count]
    args += [shown[0], max(shown[1], 1)] if shown else ["", ""]
    args.append("" if mark_ttl is None else mark_ttl)
    merged, floor, shown_ids, wanted, raws, live = _with_script(
        _READ_PAGE_LUA, lambda sha: _round_trip(("EVALSHA", sha, len(keys), *keys, *args))[0]
    )
    return PageRead(
        ids=[int(m) for m in merged],
        floor=int(floor) if floor else None,
        shown=[int(m) for m in shown_ids],
        bodies={int(m): raw for m, raw in zip(wanted, raws, strict=True)},
        feed_missing=not live,
    )


def read_page_pipelined(
    keys: Sequence[str],
    *,
    max_id: int | None,
    count: int,
    nbodies: int,
    shown: tuple[int, int] | None = None,
    mark_ttl: int | None = None,
) -> PageRead:
    """read_page for readers with many sources: the script's merge costs Redis time in
    proportion to ids x sources, all of it atomic (200 celebrity timelines: ~50 ms in which
    Redis serves no one else). Here the streams are one pipeline of single-key reads, merged in
    Python, and the bodies a second round trip."""
    if mark_ttl is not None:
        live = client().expire(keys[0], mark_ttl) if mark_ttl else client().exists(keys[0])
        if not live:
            return PageRead(ids=[], floor=None, shown=[], bodies={}, feed_missing=True)
    streams = read_streams(keys, max_id=max_id, count=count)
    ids, floor = merge_to_floor(streams, count)
    shown_ids: list[int] = []
    if shown is not None:
        shown_ids = merge_streams(read_streams(keys, max_id=shown[0], min_id=shown[1]))
    wanted = list(dict.fromkeys([*ids[:nbodies], *shown_ids]))
    found = get_bodies(wanted)
    return PageRead(ids=ids, floor=floor, shown=shown_ids, bodies={i: found.get(i) for i in wanted})
