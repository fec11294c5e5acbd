"""The warm feed read: the prelude (token, throttle, pull-author list) and the page (the reader's
sources merged and their bodies, one Lua function; pipelined for readers with many sources). On
one Redis both are one script and one round trip (read_warm); on a cluster, or when Redis cannot
name the sources, two (read_prelude, then the page)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
from django.conf import settings

from feedsite.shards import VSHARDS

from ..merge import merge_streams, merge_to_floor
from .bodies import get_bodies
from .connection import LOST, client, is_cluster, round_trip, scatter, with_script
from .feeds import read_streams
from .keys import (
    DECODE_ID_LUA,
    MAX_ID,
    SENTINEL,
    body_prefix,
    decode_id,
    feed_key,
    hidden_key,
    lex_start,
    lex_stop,
    object_timeline_key_head,
    pull_authors_key,
    pull_version_key,
    throttle_key,
    timeline_key_head,
    token_key,
)
from .throttle import window_of


@dataclass(frozen=True)
class ReadPrelude:
    """What the first round trip of a feed read brings back."""

    token: bytes | None  # the cached token entry (None: not cached, or revoked)
    hits: int  # throttle hits in the current window, this one included (0: not counted)
    window_left: int  # seconds until the throttle window ends
    pull_raw: bytes | None  # the cached pull sources ("tag:id,id,...|digest,...")
    pull_version: int
    hidden_raw: bytes | None = None  # the cached authors the reader does not see ("id,id,...")


def _prelude_deadline() -> float:
    """The prelude's deadline on a cluster: four times the page's, at least half a second (it
    decides whether the read happens at all)."""
    return max(0.5, 4 * settings.FEEDSITE_READ_DEADLINE_MS / 1000)


def _prelude_keys(
    digest: str, user_id: int, throttle: tuple[str, str, int] | None
) -> tuple[list, int]:
    """What a read's prelude reads (both read_prelude and read_warm): the token entry, the
    throttle counter of this window (None without a throttle), the pull-author list, the pull
    version and the hidden authors; and the seconds left in the throttle window."""
    name, ident, window_seconds = throttle or ("", "", 60)
    window_no, left = window_of(window_seconds, time.time())
    keys = [
        token_key(digest),
        throttle_key(name, ident, window_no) if throttle else None,
        pull_authors_key(user_id),
        pull_version_key(),
        hidden_key(user_id),
    ]
    return keys, left


def read_prelude(
    *, digest: str, user_id: int, throttle: tuple[str, str, int] | None
) -> ReadPrelude:
    """The first phase of a feed read when read_warm is not used (on a cluster, for a request
    with bad input, for the benchmark's SQL comparison): one pipeline of single-key commands
    (one parallel round on a cluster): the token entry (checks the caller's claimed user id),
    the throttle hit (``throttle`` = scope, ident, window seconds; None: not counted here, hits
    0: the caller counts once the claim is confirmed), the pull-author list and its version,
    and the authors the reader does not see. Nothing here writes to the claimed user's keys:
    the claim is confirmed only by this round trip's answer (the read mark rides on the page
    read, see read_page's ``mark_ttl``)."""
    (token, hit, pull, version, hidden), left = _prelude_keys(digest, user_id, throttle)
    counting: tuple = ()
    if throttle is not None:
        counting = (("INCR", hit), ("EXPIRE", hit, throttle[2] * 2))
    commands = (("GET", token), *counting, ("GET", pull), ("GET", version), ("GET", hidden))
    at = 1 + len(counting)  # where the pull-author list's reply is
    if is_cluster():
        # Keys on several nodes: one scatter round with a deadline. The token entry is needed
        # (a node that hangs on it fails the read fast: 503); the rest degrades: the throttle
        # fails open, the pull-author list and the hidden authors are read from PostgreSQL,
        # an unknown pull version makes the cached list stale (read again).
        began = time.monotonic()
        replies, failed = scatter([(c[1], c) for c in commands], _prelude_deadline())
        if _lost(replies[0]) and time.monotonic() - began < _prelude_deadline() / 2:
            # Not asked (its node timed out a moment ago), not timed out now: the token entry
            # is the one key to insist on.
            replies[0] = scatter(
                [(commands[0][1], commands[0])], _prelude_deadline(), skip_suspect=False
            )[0][0]
        _raise_errors(replies)
        if _lost(replies[0]):
            raise redis.exceptions.TimeoutError(f"feed read prelude: no answer from {failed}")
        got = [None if _lost(r) else r for r in replies]
        token, pull_raw, version, hidden_raw = got[0], got[at], got[at + 1], got[at + 2]
        hits = (got[1] or 0) if counting else 0
        version = -1 if _lost(replies[at + 1]) else version
    else:
        replies = round_trip(*commands)
        token, pull_raw, version, hidden_raw = replies[0], *replies[at:]
        hits = replies[1] if counting else 0
    return ReadPrelude(token, int(hits), left, pull_raw, int(version or 0), hidden_raw)


# The page (round trip 2, or part of the one round trip of read_warm). Each stream (the
# reader's feed, the pull authors' timelines; members in lex encoding, see keys.encode_id) is
# read newest first, at most `count` ids at or below `hi`;
# they are merged without duplicates down to the floor (the highest last id of a stream that
# returned `count` ids: below it a stream may hold ids that were not read), and the bodies of
# the newest `nbodies` come along. With a "shown" range (a cursor's bucket), its merged ids and
# all their bodies too. KEYS: the streams, the reader's feed first. ARGV: body key prefix,
# nbodies, hi, count, shown hi, shown lo (or '', ''; lex bounds: keys.lex_start, lex_stop),
# read-mark seconds (or ''), the bound below every id (keys.lex_stop(None)).
# Members sort newest first (keys.encode_id): ZRANGEBYLEX reads each stream newest first.
# Returns {merged ids, floor or '', shown ids, body ids, bodies, 1, missing timelines} (ids as
# integers), or 0 in the sixth place when the feed to mark does not exist.
# Body keys are read from the script (not declared in KEYS): that is fine on one Redis; on
# Redis Cluster the same two phases are two parallel rounds (streams, then bodies).
_PAGE_LUA = (
    DECODE_ID_LUA
    + """
-- A k-way merge of newest-first lists, distinct ids down to `floor` (a sort with a comparator
-- costs ~2 ms for 300 ids in Redis' Lua; this touches each id once).
-- Ids come out as numbers (exact below 2^53): Redis replies with integers, so the caller does
-- not decode members again.
local function merge(lists, floor)
  local pos, heads, out, last = {}, {}, {}, nil
  for i, l in ipairs(lists) do
    pos[i] = 1
    heads[i] = l[1] and num(l[1])
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
      out[#out + 1] = best
    end
    pos[bi] = pos[bi] + 1
    local nxt = lists[bi][pos[bi]]
    heads[bi] = nxt and num(nxt)
  end
  return out
end
-- The page of `keys` (the streams, the reader's feed first); a = {body key prefix, nbodies,
-- hi, count, shown hi, shown lo, read-mark seconds, stop}, as the page script's ARGV.
local function read_page(keys, a)
  local prefix, nbodies, hi, count, stop = a[1], tonumber(a[2]), a[3], tonumber(a[4]), a[8]
  -- The read mark, when asked for (a[7]: seconds, 0 = check only): the reader's feed (keys[1])
  -- lives that much longer; a missing feed answers at once, to be rebuilt.
  if a[7] ~= '' then
    local live
    if tonumber(a[7]) > 0 then
      live = redis.call('EXPIRE', keys[1], a[7])
    else
      live = redis.call('EXISTS', keys[1])
    end
    if live == 0 then return {{}, '', {}, {}, {}, 0, {}, ''} end
  end
  local streams, floor, missing = {}, nil, {}
  for i, key in ipairs(keys) do
    local ids = redis.call('ZRANGEBYLEX', key, hi, stop, 'LIMIT', 0, count)
    streams[i] = ids
    if i > 1 and #ids == 0 and redis.call('EXISTS', key) == 0 then missing[#missing + 1] = key end
    if #ids == count then
      local last = num(ids[#ids])
      if floor == nil or last > floor then floor = last end
    end
  end
  -- The edge: below it the streams do not hold everything (PostgreSQL serves it, see
  -- store.page.stream_edge, the same rule in Python). A stream read to its end shows its tail,
  -- unless it still holds the built marker: never trimmed (and, for a feed, no follow's
  -- backfill left older activities out), it holds its whole history. A reader's feed
  -- (keys[1]) that is gone holds nothing: the edge is above every id.
  local edge = nil
  for i, key in ipairs(keys) do
    if #streams[i] < count then
      local t, tail = redis.call('ZRANGE', key, -1, -1), nil
      if t[1] == '@SENTINEL@' then
        tail = nil
      elseif t[1] then
        tail = num(t[1])
      elseif i == 1 then
        tail = 9007199254740992
      end
      if tail and (edge == nil or tail > edge) then edge = tail end
    end
  end
  local merged = merge(streams, floor)
  local wanted = {}
  for i = 1, math.min(nbodies, #merged) do wanted[i] = merged[i] end
  local shown = {}
  if a[5] ~= '' then
    local lists = {}
    for i, key in ipairs(keys) do
      lists[i] = redis.call('ZRANGEBYLEX', key, a[5], a[6])
    end
    shown = merge(lists, nil)
    local have = {}
    for _, m in ipairs(wanted) do have[m] = true end
    for _, m in ipairs(shown) do
      if not have[m] then wanted[#wanted + 1] = m end
    end
  end
  -- The bodies in MGETs of up to 1,000 keys (Lua's unpack has a limit): a GET per body from Lua
  -- cost twice as much Redis time.
  local bodies, bkeys = {}, {}
  for i, id in ipairs(wanted) do bkeys[i] = prefix .. string.format('%d', id) end
  for i = 1, #bkeys, 1000 do
    local part = redis.call('MGET', unpack(bkeys, i, math.min(i + 999, #bkeys)))
    for j = 1, #part do bodies[#bodies + 1] = part[j] end
  end
  return {merged, floor and string.format('%d', floor) or '', shown, wanted, bodies, 1, missing,
          edge and string.format('%d', edge) or ''}
end
"""
)
_PAGE_LUA = _PAGE_LUA.replace("@SENTINEL@", SENTINEL)
_READ_PAGE_LUA = _PAGE_LUA + "return read_page(KEYS, ARGV)\n"


@dataclass
class PageRead:
    ids: list[int]  # merged, newest first, distinct, complete down to the floor
    floor: int | None  # None: every stream was read to its end (at or below max_id)
    shown: list[int]  # ids of the "shown" range, newest first, distinct
    bodies: dict[int, bytes | None]  # raw bodies of ids read along (None: not cached)
    feed_missing: bool = False  # the read mark found no feed: nothing else was read
    sources_missing: list[str] = field(default_factory=list)  # timelines that do not exist
    partial: bool = False  # some sources' nodes did not answer in time: left out
    # Below this id the sources do not hold everything (stream_edge): PostgreSQL serves it.
    # None: no source was read to its end.
    edge: int | None = None


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
    args = _page_args(max_id, count, nbodies, shown, mark_ttl)
    return _page_from_reply(
        with_script(
            _READ_PAGE_LUA, lambda sha: round_trip(("EVALSHA", sha, len(keys), *keys, *args))[0]
        )
    )


def _page_args(
    max_id: int | None,
    count: int,
    nbodies: int,
    shown: tuple[int, int] | None,
    mark_ttl: int | None,
) -> list:
    """The page script's ARGV (see _PAGE_LUA)."""
    args = [body_prefix(), nbodies, lex_start(max_id), count]
    args += [lex_start(shown[0]), lex_stop(shown[1])] if shown else ["", ""]
    args += ["" if mark_ttl is None else mark_ttl, lex_stop(None)]
    return args


def _page_from_reply(reply: list) -> PageRead:
    merged, floor, shown_ids, wanted, raws, live, missing, edge = reply
    return PageRead(
        ids=merged,
        floor=int(floor) if floor else None,
        shown=shown_ids,
        bodies=dict(zip(wanted, raws, strict=True)),
        feed_missing=not live,
        sources_missing=[k.decode() for k in missing],
        edge=int(edge) if edge else None,
    )


# The edge of a feed whose own sorted set holds nothing: above every id.
EDGE_ALL = MAX_ID + 1


def stream_edge(tails: Sequence[Sequence[bytes] | None], exhausted: Sequence[bool]) -> int | None:
    """Where a read's sources stop holding everything (the Lua page script's rule): the highest
    tail of a stream read to its end. ``tails``: each stream's last member by rank, as a list
    (None: not read). A stream whose last member is the built marker (SENTINEL) was never
    trimmed (and a feed's, never left without a followee's older activities by a follow's
    backfill: feeds.services.feed_follow_backfill): it holds its whole history, no edge. The
    first stream is the reader's feed: gone, it holds nothing (EDGE_ALL). Pure."""
    edge: int | None = None
    sentinel = SENTINEL.encode()
    for i, (tail, done) in enumerate(zip(tails, exhausted, strict=True)):
        if not done or tail is None:
            continue
        at: int | None = None
        if tail and tail[-1] != sentinel:
            at = decode_id(tail[-1])
        elif not tail and i == 0:
            at = EDGE_ALL
        if at is not None and (edge is None or at > edge):
            edge = at
    return edge


# A warm read in one round trip (one Redis; a cluster keeps the two rounds): the prelude of
# read_prelude, then, when Redis itself finds that the token entry confirms the claim, the
# throttle admits the read and the cached pull-source list is current, the page of the feed and
# those authors' and objects' timelines (read_page, with the read mark). Otherwise the prelude alone: the
# caller decides as after read_prelude and reads the page in a second round trip. Nothing of
# the claimed user's is written (the read mark) or read beyond the prelude's own keys before
# the claim is confirmed, and the throttle (the confirmed user's) is counted only then.
# KEYS: token entry, throttle counter, pull-author list, pull version, hidden authors, the
# reader's feed. ARGV: counter seconds, claimed user id, throttle limit, celebrity threshold,
# timeline key head, VSHARDS, the most sources a script page reads, object timeline key head,
# then the page's ARGV.
# Returns {token, hits (0: not counted), pull list, pull version, hidden} and, with a page, its
# reply and keys.
_WARM_READ_LUA = (
    _PAGE_LUA
    + """
local token = redis.call('GET', KEYS[1])
local pull = redis.call('GET', KEYS[3])
local version = redis.call('GET', KEYS[4])
local out = {token, 0, pull, version, redis.call('GET', KEYS[5])}
if not token then return out end
-- A tombstone (store.TOMBSTONE) is no JSON: not confirmed, as no entry.
local ok, entry = pcall(cjson.decode, token)
-- The id compared as a number and as its decimal text: a double rounds above 2^53.
if not ok or type(entry) ~= 'table' or type(entry.id) ~= 'number' or entry.is_active ~= true
    or entry.id ~= tonumber(ARGV[2]) or string.format('%d', entry.id) ~= ARGV[2] then
  return out
end
-- Counted only now, the claim confirmed: the throttle is the user's, and a forged token naming
-- them spends none of it (hits 0 in the reply: not counted, the caller counts once confirmed).
local hits = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
out[2] = hits
if not pull or hits > tonumber(ARGV[3]) then return out end
-- The list as feeds.store.pull_sources_from_cache reads it:
-- "<threshold>.<version>+o:id,id,...|digest,digest,..." (pull authors, then pull objects)
local head = ARGV[4] .. '.' .. (version or '0') .. '+o:'
if string.sub(pull, 1, #head) ~= head then return out end
local rest = string.sub(pull, #head + 1)
local bar = string.find(rest, '|', 1, true)
if not bar then return out end
local keys, vshards = {KEYS[6]}, tonumber(ARGV[6])
for id in string.gmatch(string.sub(rest, 1, bar - 1), '%d+') do
  keys[#keys + 1] = ARGV[5] .. '{s' .. string.format('%d', tonumber(id) % vshards) .. '}:' .. id
end
-- An object's timeline (keys.object_timeline_key_of): its shard from the digest's first 32 bits.
for d in string.gmatch(string.sub(rest, bar + 1), '%x+') do
  local v = tonumber(string.sub(d, 1, 8), 16) % vshards
  keys[#keys + 1] = ARGV[8] .. '{s' .. string.format('%d', v) .. '}:' .. d
end
if #keys > tonumber(ARGV[7]) then return out end
local a = {}
for i = 9, #ARGV do a[#a + 1] = ARGV[i] end
out[6] = read_page(keys, a)
out[7] = keys
return out
"""
)


@dataclass(frozen=True)
class WarmRead:
    prelude: ReadPrelude
    keys: list[str] | None = None  # the sources the page was read from (None: no page read)
    page: PageRead | None = None


def read_warm(
    *,
    digest: str,
    user_id: int,
    throttle: tuple[str, str, int],
    hit_limit: int,
    threshold: int,
    max_sources: int,
    max_id: int | None,
    count: int,
    nbodies: int,
    shown: tuple[int, int] | None,
    mark_ttl: int,
) -> WarmRead:
    """A warm feed read in one round trip on one Redis (see _WARM_READ_LUA): the prelude, and
    the page (read_page's arguments) when Redis could confirm the claim and knew the sources.
    Not for a cluster, whose keys live on several nodes (read_prelude, then the page)."""
    keys, left = _prelude_keys(digest, user_id, throttle)
    keys.append(feed_key(user_id))
    args = [throttle[2] * 2, user_id, hit_limit, threshold, timeline_key_head(), VSHARDS]
    args += [max_sources, object_timeline_key_head()]
    args += _page_args(max_id, count, nbodies, shown, mark_ttl)
    reply = with_script(
        _WARM_READ_LUA, lambda sha: round_trip(("EVALSHA", sha, len(keys), *keys, *args))[0]
    )
    token, hits, pull_raw, version, hidden_raw = reply[:5]
    prelude = ReadPrelude(token, int(hits), left, pull_raw, int(version or 0), hidden_raw)
    if len(reply) < 7:
        return WarmRead(prelude)
    return WarmRead(prelude, [k.decode() for k in reply[6]], _page_from_reply(reply[5]))


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
    found = get_bodies(wanted, tombstones=True)  # a tombstone: deleted, not to be looked up
    empty = [key for key, stream in zip(keys[1:], streams[1:], strict=True) if not stream]
    missing = [key for key, n in zip(empty, existing(empty), strict=True) if not n]
    exhausted = [len(stream) < count for stream in streams]
    return PageRead(
        ids=ids,
        floor=floor,
        shown=shown_ids,
        bodies={i: found.get(i) for i in wanted},
        sources_missing=missing,
        edge=stream_edge(tails(keys, exhausted), exhausted),
    )


def tails(keys: Sequence[str], wanted: Sequence[bool]) -> list[list[bytes] | None]:
    """The last member by rank of the wanted keys, as a list (None for the others): one
    pipelined round trip, none when nothing is wanted."""
    asked = [k for k, w in zip(keys, wanted, strict=True) if w]
    if not asked:
        return [None] * len(keys)
    pipe = client().pipeline(transaction=False)
    for key in asked:
        pipe.zrange(key, -1, -1)
    got = iter(pipe.execute())
    return [next(got) if w else None for w in wanted]


def existing(keys: Sequence[str]) -> list[bool]:
    """Whether each key exists: one pipelined round trip (none when there is nothing to ask)."""
    if not keys:
        return []
    pipe = client().pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    return [bool(n) for n in pipe.execute()]


def _lost(reply) -> bool:
    """A reply that did not arrive (LOST), says its slot lives elsewhere now, or that the
    cluster does not serve that slot (CLUSTERDOWN: a master failed, no replica took over)."""
    return reply is LOST or isinstance(
        reply,
        redis.exceptions.MovedError
        | redis.exceptions.AskError
        | redis.exceptions.TryAgainError
        | redis.exceptions.ClusterDownError,
    )


def _raise_errors(replies: Sequence) -> None:
    """A real error reply of a scatter round (WRONGTYPE, not a lost node) is raised, as it is
    on one Redis."""
    for reply in replies:
        if isinstance(reply, redis.exceptions.ResponseError) and not _lost(reply):
            raise reply


def read_page_gathered(
    keys: Sequence[str],
    *,
    max_id: int | None,
    count: int,
    nbodies: int,
    shown: tuple[int, int] | None = None,
    mark_ttl: int | None = None,
    deadline: float | None = None,
) -> PageRead:
    """read_page on Redis Cluster, where the reader's feed and the pull authors' timelines live
    on several nodes: two scatter-gather rounds (connection.scatter), the sources then their
    bodies, each sent to every node at once and read until ``deadline`` seconds. A source whose
    node did not answer in time (or whose slot moved) is left out and the page says
    ``partial``; a body that did not arrive is read from PostgreSQL like any uncached body."""
    if deadline is None:  # the read deadline (FEEDSITE_READ_DEADLINE_MS)
        deadline = settings.FEEDSITE_READ_DEADLINE_MS / 1000
    first = lex_start(max_id)
    commands: list[tuple[str, tuple]] = []
    if mark_ttl is not None:
        mark = ("EXPIRE", keys[0], mark_ttl) if mark_ttl else ("EXISTS", keys[0])
        commands.append((keys[0], mark))
    at = len(commands)
    commands += [(k, ("ZRANGEBYLEX", k, first, lex_stop(None), "LIMIT", 0, count)) for k in keys]
    if shown is not None:
        bounds = (lex_start(shown[0]), lex_stop(shown[1]))
        commands += [(k, ("ZRANGEBYLEX", k, *bounds)) for k in keys]
    commands += [(k, ("EXISTS", k)) for k in keys[1:]]
    commands += [(k, ("ZRANGE", k, -1, -1)) for k in keys]  # the tails (stream_edge)
    replies, _ = scatter(commands, deadline)
    _raise_errors(replies)
    if mark_ttl is not None and replies[0] == 0:
        return PageRead(ids=[], floor=None, shown=[], bodies={}, feed_missing=True)
    n = len(keys)
    streams = replies[at : at + n]
    shown_lists = replies[at + n : at + 2 * n] if shown is not None else []
    exists = replies[at + n * (2 if shown is not None else 1) : -n]
    tail_replies = replies[-n:]
    partial = any(_lost(r) for r in streams) or any(_lost(r) for r in shown_lists)
    if mark_ttl is not None and _lost(replies[0]):
        partial = True
    got = [[decode_id(m) for m in r] for r in streams if not _lost(r)]
    ids, floor = merge_to_floor(got, count)
    shown_ids = merge_streams([[decode_id(m) for m in r] for r in shown_lists if not _lost(r)])
    wanted = list(dict.fromkeys([*ids[:nbodies], *shown_ids]))
    found = get_bodies(wanted, tombstones=True)  # one scatter round with the read deadline
    missing = [
        k
        for k, stream, there in zip(keys[1:], streams[1:], exists, strict=True)
        if stream == [] and there == 0
    ]
    # A stream's tail counts once its stream was read to its end; a lost reply says nothing.
    exhausted = [not _lost(r) and len(r) < count for r in streams]
    edge = stream_edge([None if _lost(t) else t for t in tail_replies], exhausted)
    partial |= any(e and _lost(t) for e, t in zip(exhausted, tail_replies, strict=True))
    return PageRead(
        ids=ids,
        floor=floor,
        shown=shown_ids,
        bodies={i: found.get(i) for i in wanted},
        sources_missing=missing,
        partial=partial,
        edge=edge,
    )
