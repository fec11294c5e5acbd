"""Feeds and timelines: capped adds (fan-out), removals, rebuilt feeds, the read mark, the
rebuild lock, the fan-out bookkeeping counters and the cached pull-author lists."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .connection import client, with_script
from .keys import (
    SENTINEL,
    author_mode_key,
    body_key,
    deliveries_key,
    feed_key,
    parked_key,
    pull_authors_key,
    pull_version_key,
    rebuild_lock_key,
    timeline_key,
    unfollows_key,
    went_push_key,
)

# One command per feed instead of ZADD + ZREMRANGEBYRANK: half the commands to pack, send and
# parse (the client's cost dominates a 1,000-feed batch). One key per call: Redis Cluster safe.
#
# Only feeds that exist are written: a feed that is missing (never built, evicted, or expired
# because its owner stopped reading) would otherwise hold a partial feed. It is rebuilt from
# PostgreSQL on its owner's next read, so fan-out cost follows active readers, not followers.
# A feed being rebuilt (KEYS[2], the rebuild marker, set before the rebuild reads PostgreSQL)
# does not exist yet either: what fan-out delivers meanwhile is parked in KEYS[3] and merged in
# by the rebuild after its write (write_feed), so an activity fanned out between the
# rebuild's read and its write is not lost. (Timelines pass only KEYS[1].)
# ARGV: cap, then ids. Returns 1 when written (or parked), 0 when skipped.
_ADD_CAPPED_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then
    for i = 2, #ARGV do redis.call('ZADD', KEYS[3], ARGV[i], ARGV[i]) end
    redis.call('EXPIRE', KEYS[3], 300)
    return 1
  end
  return 0
end
local cap = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i]) end
if redis.call('ZCARD', KEYS[1]) > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(cap + 1))
end
return 1
"""


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
            pipe.execute_command(
                "EVALSHA",
                sha,
                3,
                feed_key(uid),
                rebuild_lock_key(uid),
                parked_key(uid),
                cap,
                *activity_ids,
            )
        pipe.get(unfollows_key(author_id))
        pipe.exists(body_key(activity_ids[0]))
        return pipe.execute()

    *written, unfollows, body = with_script(_ADD_CAPPED_LUA, run)
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
    built marker, the cap and the inactivity TTL, atomically on one key; then what fan-out
    parked while the rebuild read PostgreSQL (see mark_rebuilding)."""
    key = feed_key(user_id)
    pipe = client().pipeline(transaction=True)
    pipe.zadd(key, {SENTINEL: 0, **{str(i): i for i in activity_ids}})
    pipe.zremrangebyrank(key, 0, -(cap + 1))
    if ttl:
        pipe.expire(key, ttl)
    pipe.execute()
    _merge_parked(user_id, cap)


def write_timeline(author_id: int, activity_ids: Sequence[int], cap: int) -> None:
    """A rebuilt timeline: the ids merged in, with the built marker (so an author with no
    activities has a timeline that exists), capped."""
    pipe = client().pipeline(transaction=False)
    _zadd_capped(pipe, timeline_key(author_id), [int(SENTINEL), *activity_ids], cap)
    pipe.execute()


def add_to_timeline(author_id: int, activity_ids: Sequence[int], cap: int) -> bool:
    """Add to the author's timeline if it exists (see _ADD_CAPPED_LUA): a missing one (never
    built, evicted, flushed) is rebuilt whole on the next read that needs it, never left
    holding only the newest ids. True when written."""
    key = timeline_key(author_id)
    written = with_script(
        _ADD_CAPPED_LUA,
        lambda sha: client().evalsha(sha, 1, key, cap, *activity_ids),
    )
    return bool(written)


def touch_feed(user_id: int, ttl: int) -> bool:
    """Mark a read (the feed lives ``ttl`` more seconds); False when the feed does not exist."""
    key = feed_key(user_id)
    return bool(client().expire(key, ttl) if ttl else client().exists(key))


def lock_rebuild(user_id: int, seconds: int = 30) -> bool:
    return bool(client().set(rebuild_lock_key(user_id), "1", nx=True, ex=seconds))


def unlock_rebuild(user_id: int) -> None:
    client().delete(rebuild_lock_key(user_id))


def rebuild_locked(user_id: int) -> bool:
    return bool(client().exists(rebuild_lock_key(user_id)))


def remove_from_timeline(author_id: int, activity_id: int) -> None:
    client().zrem(timeline_key(author_id), str(activity_id))


def feed_oldest_id(user_id: int) -> int | None:
    """The lowest id still in a feed (None if empty): bounds an unfollow purge to the feed window."""
    rows = client().zrangebyscore(feed_key(user_id), "(0", "+inf", start=0, num=1)
    return _ids(rows)[0] if rows else None


def feed_ids(user_id: int) -> list[int]:
    """Every id in a feed, newest first (feeds are capped, so this is bounded)."""
    return _ids(client().zrevrangebyscore(feed_key(user_id), "+inf", "(0"))


def timeline_ids(author_id: int) -> list[int]:
    """Every id in a timeline, newest first (not the built marker)."""
    return _ids(client().zrevrangebyscore(timeline_key(author_id), "+inf", "(0"))


def _ids(members: Any) -> list[int]:
    """Sorted-set members (activity ids as bytes) as ints."""
    return [int(m) for m in members]


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


def pull_authors_from_cache(raw: bytes | None, tag: str) -> list[int] | None:
    """The cached pull-author ids, or None when absent or cached under another tag (another
    threshold, or before some author crossed it)."""
    if raw is None:
        return None
    cached_tag, _, ids = raw.decode().partition(":")
    if cached_tag != tag:
        return None
    return [int(i) for i in ids.split(",") if i]


def user_forget(user_id: int) -> None:
    """A deleted user's feed, timeline and cached pull-author list go."""
    client().delete(feed_key(user_id), timeline_key(user_id), pull_authors_key(user_id))


def author_mode_swap(author_id: int, mode: str) -> str | None:
    """Record an author's mode ("pull" or "push") and return the one recorded before (None:
    never recorded), atomically (SET ... GET): of several concurrent follows or unfollows that
    move an author across the threshold, exactly one sees the change."""
    old = client().set(author_mode_key(author_id), mode, get=True)
    return old.decode() if isinstance(old, bytes) else None


def mark_went_push(author_id: int, as_of_id: int) -> None:
    """The author became a push author at ``as_of_id`` (an activity id made from the time)."""
    client().set(went_push_key(author_id), as_of_id)


def mark_went_push_many(author_ids: Sequence[int], as_of_id: int) -> None:
    pipe = client().pipeline(transaction=False)
    for author_id in author_ids:
        pipe.set(went_push_key(author_id), as_of_id)
    pipe.execute()


def went_push_since(author_id: int, activity_id: int) -> bool:
    """Whether the author may have been a push author after ``activity_id`` was published:
    they became one since, or nothing is known (the mode was never recorded, Redis lost it)."""
    mode, pushed = client().mget(author_mode_key(author_id), went_push_key(author_id))
    if mode is None:
        return True
    return pushed is not None and int(pushed) >= activity_id


def mark_rebuilding(user_id: int, seconds: int = 30) -> None:
    """Before a rebuild reads PostgreSQL: fan-out parks what it delivers to this user meanwhile
    (write_feed merges it in)."""
    client().set(rebuild_lock_key(user_id), "1", ex=seconds)


# KEYS: the feed, its parked set. ARGV: cap. Members are ids (score = id); the feed keeps its TTL.
_MERGE_PARKED_LUA = """
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
if #ids == 0 then return 0 end
for _, m in ipairs(ids) do redis.call('ZADD', KEYS[1], m, m) end
local cap = tonumber(ARGV[1])
if redis.call('ZCARD', KEYS[1]) > cap then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(cap + 1)) end
redis.call('DEL', KEYS[2])
return #ids
"""


def _merge_parked(user_id: int, cap: int) -> int:
    """After a rebuild wrote the feed: what fan-out parked meanwhile goes in (capped), at once
    (the feed keeps its TTL). Returns how many ids were parked."""
    keys = (feed_key(user_id), parked_key(user_id))
    merged = with_script(_MERGE_PARKED_LUA, lambda sha: client().evalsha(sha, 2, *keys, cap))
    return int(merged)
