"""Notification feeds: per user a capped sorted set of activity ids (lex encoding, as home
feeds: keys.encode_id; bodies are the shared activity bodies), the set of those not read yet
(member = score = id), and the seen mark. The three keys share a hash
tag, so every command and script below stays in one slot.

A feed that holds every notification of its user (built from fewer rows than the cap, never
trimmed since) also holds the marker SENTINEL (it sorts last, and no read of ids returns it):
a page that reads such a feed to its end has nothing older to read from PostgreSQL. The first
trim takes the marker away with the oldest ids; from then on the pages below the feed's oldest
entry come from the Notification rows (feeds.notifications.NotificationSource)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .connection import client, round_trip, with_script
from .keys import (
    DECODE_ID_LUA,
    MAX_ID,
    SENTINEL,
    decode_id,
    encode_id,
    lex_start,
    lex_stop,
    notification_keys,
    streams_key,
)

# KEYS: notif, unread, seen. ARGV: cap, id, "1" to count it unread, the id's feed member.
# Nothing when the feed was never built (its first read builds it from PostgreSQL). An id
# already there keeps its state (a redelivered batch must not make a read notification unread
# again). Over the cap (the marker not counted), the oldest ids go, and the marker with them:
# the feed no longer holds every notification.
_ADD_LUA = (
    DECODE_ID_LUA
    + """
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
if redis.call('ZADD', KEYS[1], 0, ARGV[4]) == 1 and ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[2])
end
local cap = tonumber(ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], '@SENTINEL@') then n = n - 1 end
if n > cap then  -- the oldest are the tail (keys.encode_id), the marker after them
  local old = redis.call('ZRANGE', KEYS[1], cap, n - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], cap, -1)
  for i, m in ipairs(old) do old[i] = string.format('%d', num(m)) end
  redis.call('ZREM', KEYS[2], unpack(old))
end
return 1
"""
).replace("@SENTINEL@", SENTINEL)

# KEYS: notif. ARGV: cap, "1" when the ids are every notification row of the user, then the
# ids' members. Merges them in; the marker (the feed holds everything) when the rows were all
# and the feed holds no more than the cap: a delivery that trimmed the feed since the rows were
# read left it at the cap, and the older rows merged in take it over the cap. Otherwise no
# marker.
_BUILD_LUA = """
for i = 3, #ARGV, 2000 do
  local batch = {}
  for j = i, math.min(i + 1999, #ARGV) do
    batch[#batch + 1] = 0
    batch[#batch + 1] = ARGV[j]
  end
  redis.call('ZADD', KEYS[1], unpack(batch))
end
local n = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], '@SENTINEL@') then n = n - 1 end
if ARGV[2] == '1' and n <= tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], 0, '@SENTINEL@')
else
  redis.call('ZREM', KEYS[1], '@SENTINEL@')
end
return 1
""".replace("@SENTINEL@", SENTINEL)

# KEYS: notif, unread, seen. Returns {unseen, unread}, or {-1, -1} when not built. Unseen:
# unread ids above the seen mark (a read notification is seen).
_COUNTS_LUA = """
local seen = redis.call('GET', KEYS[3])
if not seen then return {-1, -1} end
return {redis.call('ZCOUNT', KEYS[2], '(' .. seen, '+inf'), redis.call('ZCARD', KEYS[2])}
"""

# KEYS: seen. ARGV: id. The mark only moves up.
_SEEN_LUA = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


def notifications_add(entries: Sequence[tuple[int, bool]], activity_id: int, cap: int) -> list[int]:
    """Add an activity to the notification feeds of (user, counts unread) ``entries``, one
    pipelined round trip; returns the users whose feeds were built (and so written)."""
    if not entries:
        return []
    member = encode_id(activity_id)

    def run(sha: str) -> list:
        pipe = client().pipeline(transaction=False)
        for user_id, unread in entries:
            keys = notification_keys(user_id)
            # execute_command: redis-py's cluster pipeline refuses pipe.evalsha, routes this
            pipe.execute_command(
                "EVALSHA", sha, len(keys), *keys, cap, activity_id, "1" if unread else "0", member
            )
        return pipe.execute()

    written = with_script(_ADD_LUA, run)
    return [user_id for (user_id, _), ok in zip(entries, written, strict=True) if ok]


def notifications_remove(user_ids: Iterable[int], activity_ids: Sequence[int]) -> None:
    """Take activities out of users' notification feeds (a delete)."""
    if not activity_ids:
        return
    members = [encode_id(i) for i in activity_ids]
    pipe = client().pipeline(transaction=False)
    for user_id in user_ids:
        notif, unread, _ = notification_keys(user_id)
        pipe.zrem(notif, *members)
        pipe.zrem(unread, *activity_ids)
    pipe.execute()


def notifications_mark_built(user_id: int, seen_upto: int) -> None:
    """The seen mark (only if absent): from now on deliveries write to this user's feed."""
    client().set(notification_keys(user_id)[2], seen_upto, nx=True)


def notifications_build(
    user_id: int,
    ids: Sequence[int],
    unread: Sequence[int],
    *,
    cap: int = 0,
    complete: bool = False,
) -> None:
    """Merge what PostgreSQL holds into a user's notification feed (after
    notifications_mark_built: deliveries since then are already here). ``complete``: ``ids``
    are every row of the user (fewer than ``cap``): the feed then holds everything and keeps
    the marker, unless a delivery trimmed it meanwhile (see _BUILD_LUA)."""
    notif, unread_key, _ = notification_keys(user_id)
    args = [cap, "1" if complete else "0", *(encode_id(i) for i in ids)]
    with_script(_BUILD_LUA, lambda sha: round_trip(("EVALSHA", sha, 1, notif, *args))[0])
    if unread:
        client().zadd(unread_key, {str(i): i for i in unread})


def notifications_complete(user_id: int) -> bool:
    """Whether the user's notification feed holds every notification of theirs (the marker):
    one round trip. Once false it stays false until the feed is built again."""
    return client().zscore(notification_keys(user_id)[0], SENTINEL) is not None


def notification_counts(user_id: int) -> tuple[int, int] | None:
    """(unseen, unread) in one round trip; None when the feed was never built."""
    keys = notification_keys(user_id)
    unseen, unread = with_script(
        _COUNTS_LUA, lambda sha: round_trip(("EVALSHA", sha, len(keys), *keys))[0]
    )
    return None if unseen < 0 else (int(unseen), int(unread))


def notification_state(
    user_id: int, ids: Sequence[int]
) -> tuple[tuple[int, int] | None, int, set[int]]:
    """One round trip: the counts, the seen mark and which of ``ids`` are unread."""
    notif, unread, seen = keys = notification_keys(user_id)
    commands: list[tuple] = [("EVALSHA", "", len(keys), *keys), ("GET", seen)]
    if ids:
        commands.append(("ZMSCORE", unread, *ids))

    def run(sha: str) -> list:
        commands[0] = ("EVALSHA", sha, len(keys), *keys)
        return round_trip(*commands)

    answers = with_script(_COUNTS_LUA, run)
    counts = None if int(answers[0][0]) < 0 else (int(answers[0][0]), int(answers[0][1]))
    scores = answers[2] if ids else []
    return (
        counts,
        int(answers[1] or 0),
        {i for i, s in zip(ids, scores, strict=True) if s is not None},
    )


def notifications_seen(user_id: int, upto: int) -> None:
    key = notification_keys(user_id)[2]
    with_script(_SEEN_LUA, lambda sha: round_trip(("EVALSHA", sha, 1, key, upto))[0])


def notifications_read(user_id: int, ids: Sequence[int] | None) -> None:
    """Mark ``ids`` read (None: all of them)."""
    unread = notification_keys(user_id)[1]
    if ids is None:
        client().delete(unread)
    elif ids:
        client().zrem(unread, *ids)


def notification_ids_between(user_id: int, lo: int, hi: int) -> list[int]:
    """The ids of the user's notification feed in [lo, hi], newest first."""
    key = notification_keys(user_id)[0]
    return [decode_id(m) for m in round_trip(("ZRANGEBYLEX", key, lex_start(hi), lex_stop(lo)))[0]]


def notification_ids_in(
    user_id: int, ranges: Sequence[tuple[int, int]]
) -> tuple[list[list[int]], int | None]:
    """The ids of the user's notification feed in each ``(lo, hi)`` range (inclusive), newest
    first, and the id below which the user's notifications are only in PostgreSQL (the feed's
    oldest id; None when the feed holds everything, the marker): one round trip."""
    key = notification_keys(user_id)[0]
    commands: list[tuple] = [("ZRANGEBYLEX", key, lex_start(hi), lex_stop(lo)) for lo, hi in ranges]
    commands.append(("ZRANGE", key, -2, -1))  # the tail: members sort newest first, marker last
    *found, tail = round_trip(*commands)
    ids = [[decode_id(m) for m in part] for part in found]
    if tail and tail[-1] == SENTINEL.encode():
        return ids, None
    return ids, decode_id(tail[-1]) if tail else MAX_ID + 1


def online(user_ids: Sequence[int], now: float, stale_after: float) -> set[int]:
    """The users with an open stream refreshed within ``stale_after`` seconds."""
    if not user_ids:
        return set()
    pipe = client().pipeline(transaction=False)
    for user_id in user_ids:
        pipe.zcount(streams_key(user_id), now - stale_after, "+inf")
    return {u for u, n in zip(user_ids, pipe.execute(), strict=True) if n}


def notifications_forget(user_id: int) -> None:
    client().delete(*notification_keys(user_id))
