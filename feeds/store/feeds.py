"""Feeds and timelines: capped adds (fan-out), removals, rebuilt feeds, the read mark, the
rebuild lock, the fan-out bookkeeping counters and the cached pull-author lists."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from feedsite.shards import vshard

from .bodies import body_state
from .connection import best_effort, client, with_script
from .keys import (
    SENTINEL,
    author_mode_key,
    body_key,
    decode_id,
    deliveries_key,
    encode_id,
    feed_key,
    lex_start,
    lex_stop,
    parked_key,
    prefix,
    pull_authors_key,
    pull_version_key,
    rebuild_lock_key,
    timeline_key,
    unfollows_key,
    went_push_key,
)

# One Lua call per hash slot: the feeds of one virtual shard (fan-out groups a batch's followers
# by shard), so a 1,000-follower batch is a few calls instead of 1,000 commands to pack, send and
# parse (the client's per-command cost dominated). Every key of a call shares its slot: Redis
# Cluster runs it on the node that owns the shard.
#
# Only feeds that exist are written: a feed that is missing (never built, evicted, or expired
# because its owner stopped reading) would otherwise hold a partial feed. It is rebuilt from
# PostgreSQL on its owner's next read, so fan-out cost follows active readers, not followers.
# A feed being rebuilt (its rebuild marker is set before the rebuild reads PostgreSQL) does not
# exist yet either: what fan-out delivers meanwhile is parked and merged in by the rebuild after
# its write (write_feed), so an activity fanned out between the rebuild's read and its write is
# not lost. The marker and the parked set are the feed's key with another word after the prefix
# (same hash tag, same slot): KEYS are the feeds, ARGV: cap, the feed, rebuild and parked key
# prefixes (parked '' for timelines: no parking), then the members. Returns how many were
# written (or parked).
# Per feed: ZCARD (0: the feed does not exist; a built one holds at least its marker), ZADD (a
# new id sorts first, so Redis inserts it at the head of the listpack: keys.py), and a trim of
# the tail (the oldest entries) only when the feed went over its cap. Three commands, where
# EXISTS, ZADD, ZCARD and a trim of the head were four: on full feeds of 500, 9.9 us of script
# time a delivery in all, against 17-26 us for ZADD plus trim in the oldest-first layout
# (bench/fanout.py, Redis 7.0).
_ADD_CAPPED_LUA = """
local cap, fp, rp, pp = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local args = {}
for i = 5, #ARGV do
  args[#args + 1] = 0
  args[#args + 1] = ARGV[i]
end
local written = 0
for _, key in ipairs(KEYS) do
  local n = redis.call('ZCARD', key)
  if n > 0 then
    n = n + redis.call('ZADD', key, unpack(args))
    if n > cap then redis.call('ZREMRANGEBYRANK', key, cap, -1) end
    written = written + 1
  elseif pp ~= '' then
    local rest = string.sub(key, #fp + 1)
    if redis.call('EXISTS', rp .. rest) == 1 then
      redis.call('ZADD', pp .. rest, unpack(args))
      redis.call('EXPIRE', pp .. rest, 300)
      written = written + 1
    end
  end
end
return written
"""


def _key_prefixes(parking: bool = True) -> tuple[str, str, str]:
    p = prefix()
    return f"{p}:home:", f"{p}:rebuild:", f"{p}:park:" if parking else ""


def _by_shard(user_ids: Iterable[int]) -> dict[int, list[int]]:
    """User ids grouped by virtual shard, in first-seen order. Pure."""
    groups: dict[int, list[int]] = {}
    for uid in user_ids:
        groups.setdefault(vshard(uid), []).append(uid)
    return groups


def push_to_feeds(
    user_ids: Sequence[int],
    activity_ids: Sequence[int],
    cap: int,
    author_id: int,
    counters: Sequence[str] | None = None,
) -> tuple[int, int, str]:
    """Add activities to many existing feeds: one pipelined round trip of one Lua call per
    virtual shard (see _ADD_CAPPED_LUA). Returns (feeds written, the unfollow counters of the
    job's sources summed: ``counters``' keys, the author's alone by default, the state of the
    first activity's body: "cached", "deleted" or "absent", bodies.body_state), the last two
    read after the writes in the same round trip."""
    members = [encode_id(i) for i in activity_ids]
    fixed = [cap, *_key_prefixes(), *members]
    groups = _by_shard(user_ids)
    counter_keys = [unfollows_key(author_id)] if counters is None else list(counters)

    def run(sha: str) -> list:
        pipe = client().pipeline(transaction=False)
        for uids in groups.values():
            pipe.execute_command("EVALSHA", sha, len(uids), *map(feed_key, uids), *fixed)
        for key in counter_keys:  # one GET each: the keys live on several nodes of a cluster
            pipe.get(key)
        pipe.getrange(body_key(activity_ids[0]), 0, 0)
        return pipe.execute()

    *replies, head = with_script(_ADD_CAPPED_LUA, run)
    written, got = replies[: len(groups)], replies[len(groups) :]
    return sum(written), sum(int(n or 0) for n in got), body_state(head)


def remove_from_feeds(user_ids: Sequence[int], activity_ids: Sequence[int]) -> None:
    if not user_ids or not activity_ids:
        return
    members = [encode_id(i) for i in activity_ids]
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


# A rebuilt feed, atomically on its slot: the ids merged with what is there (concurrent fan-out
# is kept), the built marker, the cap, the inactivity TTL, then what fan-out parked while the
# rebuild read PostgreSQL (see mark_rebuilding). KEYS: the feed, its parked set. ARGV: cap, ttl
# (0: none), the built marker, the members. Returns how many ids were parked.
_WRITE_FEED_LUA = """
local cap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local args = {0, ARGV[3]}
for i = 4, #ARGV do
  args[#args + 1] = 0
  args[#args + 1] = ARGV[i]
end
local parked = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, m in ipairs(parked) do
  args[#args + 1] = 0
  args[#args + 1] = m
end
for i = 1, #args, 1000 do
  redis.call('ZADD', KEYS[1], unpack(args, i, math.min(i + 999, #args)))
end
if redis.call('ZCARD', KEYS[1]) > cap then redis.call('ZREMRANGEBYRANK', KEYS[1], cap, -1) end
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
redis.call('DEL', KEYS[2])
return #parked
"""


def write_feed(user_id: int, activity_ids: Sequence[int], cap: int, ttl: int) -> int:
    """A rebuilt feed (see _WRITE_FEED_LUA); returns how many parked ids were merged in."""
    keys = (feed_key(user_id), parked_key(user_id))
    args: list[Any] = [cap, ttl, SENTINEL, *(encode_id(i) for i in activity_ids)]
    return int(with_script(_WRITE_FEED_LUA, lambda sha: client().evalsha(sha, 2, *keys, *args)))


def write_timeline(author_id: int, activity_ids: Sequence[int], cap: int) -> None:
    """A rebuilt timeline: the ids merged in, with the built marker (so an author with no
    activities has a timeline that exists), capped."""
    write_sorted_set(timeline_key(author_id), activity_ids, cap)


def write_sorted_set(key: str, activity_ids: Sequence[int], cap: int) -> None:
    """A rebuilt timeline (an author's or an object's) at ``key``: the ids merged in, with the
    built marker, capped. One pipelined round trip on one key."""
    pipe = client().pipeline(transaction=False)
    pipe.zadd(key, {SENTINEL: 0, **{encode_id(i): 0 for i in activity_ids}})
    pipe.zremrangebyrank(key, cap, -1)
    pipe.execute()


def add_to_timeline(author_id: int, activity_ids: Sequence[int], cap: int) -> bool:
    """Add to the author's timeline if it exists (see _ADD_CAPPED_LUA): a missing one (never
    built, evicted, flushed) is rebuilt whole on the next read that needs it, never left
    holding only the newest ids. True when written."""
    return add_to_sorted_set(timeline_key(author_id), activity_ids, cap)


def add_to_sorted_set(key: str, activity_ids: Sequence[int], cap: int) -> bool:
    """add_to_timeline for any timeline key (an author's or an object's)."""
    args: list[Any] = [cap, *_key_prefixes(parking=False), *(encode_id(i) for i in activity_ids)]
    written = with_script(_ADD_CAPPED_LUA, lambda sha: client().evalsha(sha, 1, key, *args))
    return bool(written)


def feed_mark_partial(user_id: int) -> None:
    """The feed no longer holds its whole history (a follow's backfill left older activities
    out): its built marker goes, so a read past its oldest entry turns to PostgreSQL. A feed
    that held nothing else is gone with it, and its next read rebuilds it whole."""
    client().zrem(feed_key(user_id), SENTINEL)


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


def remove_from_timeline(author_id: int, activity_ids: Sequence[int]) -> None:
    """Take ``activity_ids`` out of the author's timeline: one ZREM (one key)."""
    if activity_ids:
        client().zrem(timeline_key(author_id), *(encode_id(i) for i in activity_ids))


def feed_oldest_id(user_id: int) -> int | None:
    """The lowest id still in a feed (None if empty): bounds an unfollow purge to the feed window."""
    rows = client().zrevrangebylex(feed_key(user_id), lex_stop(None), "-", start=0, num=1)
    return _ids(rows)[0] if rows else None


def feed_ids(user_id: int) -> list[int]:
    """Every id in a feed, newest first (feeds are capped, so this is bounded)."""
    return _ids(client().zrangebylex(feed_key(user_id), "-", lex_stop(None)))


def timeline_ids(author_id: int) -> list[int]:
    """Every id in a timeline, newest first (not the built marker)."""
    return _ids(client().zrangebylex(timeline_key(author_id), "-", lex_stop(None)))


def _ids(members: Any) -> list[int]:
    """Feed members (encoded ids, see keys.encode_id) as ints."""
    return [decode_id(m) for m in members]


def read_streams(
    keys: Sequence[str], *, max_id: int | None, min_id: int | None = None, count: int | None = None
) -> list[list[int]]:
    """Newest-first ids of several sorted sets, ids in [min_id, max_id], at most ``count`` each:
    one pipelined round trip (one single-key command per set)."""
    first, last = lex_start(max_id), lex_stop(min_id)  # never the built marker
    pipe = client().pipeline(transaction=False)
    for key in keys:
        if count is None:
            pipe.zrangebylex(key, first, last)
        else:
            pipe.zrangebylex(key, first, last, start=0, num=count)
    return [_ids(members) for members in pipe.execute()]


def begin_batch(
    job_id: int, batch_no: int, author_id: int, counters: Sequence[str] | None = None
) -> tuple[int, int]:
    """Count one delivery of a batch (the counter lives a day, far beyond any retry budget) and
    read the unfollow counters of its sources (``counters``' keys, summed: the author's alone by
    default), in one round trip: (deliveries, unfollow counters)."""
    key = deliveries_key(job_id, batch_no)
    counter_keys = [unfollows_key(author_id)] if counters is None else list(counters)
    pipe = client().pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, 86_400)
    for counter in counter_keys:
        pipe.get(counter)
    deliveries, _, *got = pipe.execute()
    return int(deliveries), sum(int(n or 0) for n in got)


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


# The cached pull sources carry this after their tag: a list of authors and objects, which an
# earlier version (whose lists named authors alone, under the bare tag) takes for another tag
# and reads again, rather than for author ids.
SOURCES_MARK = "+o"


def set_pull_authors(
    user_id: int, tag: str, ids: Sequence[int], ttl: int, objects: Sequence[str] = ()
) -> None:
    """Cache a reader's pull sources: the pull authors' ids and the digests of the pull objects
    they follow (keys.object_digest), "tag+o:id,id|digest,digest" (a read filling a miss: best
    effort on a cluster)."""
    key = pull_authors_key(user_id)
    value = f"{tag}{SOURCES_MARK}:{','.join(map(str, ids))}|{','.join(objects)}"
    best_effort((key, ("SET", key, value, "EX", ttl)))


def drop_pull_authors(user_id: int) -> None:
    client().delete(pull_authors_key(user_id))


def pull_sources_from_cache(raw: bytes | None, tag: str) -> tuple[list[int], list[str]] | None:
    """The cached pull sources (author ids, object digests), or None when absent, cached under
    another tag (another threshold, or before some author or object crossed it), or written by
    an earlier version (authors alone)."""
    if raw is None:
        return None
    cached_tag, _, rest = raw.decode().partition(":")
    authors, bar, objects = rest.partition("|")
    if cached_tag != tag + SOURCES_MARK or not bar:
        return None
    return [int(i) for i in authors.split(",") if i], [d for d in objects.split(",") if d]


def pull_authors_from_cache(raw: bytes | None, tag: str) -> list[int] | None:
    """The cached pull-author ids (pull_sources_from_cache's first half), or None."""
    sources = pull_sources_from_cache(raw, tag)
    return None if sources is None else sources[0]


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


def went_push_at(author_id: int) -> int | None:
    """When the author last became a push author (None: not recorded)."""
    value = client().get(went_push_key(author_id))
    return None if value is None else int(value)


def went_push_since(author_id: int, activity_id: int) -> bool:
    """Whether the author may have been a push author after ``activity_id`` was published:
    they became one since, or nothing is known (the mode was never recorded, Redis lost it)."""
    pipe = client().pipeline(transaction=False)  # two GETs, not MGET: two slots on a cluster
    pipe.get(author_mode_key(author_id))
    pipe.get(went_push_key(author_id))
    mode, pushed = pipe.execute()
    if mode is None:
        return True
    return pushed is not None and int(pushed) >= activity_id


def mark_rebuilding(user_id: int, seconds: int = 30) -> None:
    """Before a rebuild reads PostgreSQL: fan-out parks what it delivers to this user meanwhile
    (write_feed merges it in)."""
    client().set(rebuild_lock_key(user_id), "1", ex=seconds)
