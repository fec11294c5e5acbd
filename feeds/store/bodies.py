"""Activity bodies: one JSON string per activity, shared by every feed that holds its id.

Every write goes through one compare-and-set script on the body's own key (_WRITE_LUA: one key,
so it runs on the node that owns it, on one Redis and on Redis Cluster alike), because writers
race: a reader that loaded a body from PostgreSQL before an edit (or a delete) committed may
cache it after the edit's own write. The script keeps the newest copy by the body's
``edited_at`` (null below any time; the texts have one fixed width, so they compare as strings
in the order of time) and never replaces the tombstone a delete leaves (BODY_TOMBSTONE, for at
least the bodies' TTL): a deleted activity is never cached again, and readers take the
tombstone for "deleted" without asking PostgreSQL.

  fill    (set_bodies: reads, fan-out) written when the key is missing or the body is newer
  commit  (replace_body: an edit, after its commit) also when it is exactly as new: the
          committed row itself, so it also replaces a copy of the same edit
  bury    (bury_body: a delete, after its commit) the tombstone, whatever is there
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import redis
from django.conf import settings

from .connection import client, is_cluster, replicate, scatter, with_script
from .keys import body_key

# What a deleted activity's body key holds: no JSON (no reader can take it for a body), one
# byte. Feed reads that get raw bodies (page.py's script) see it and drop the activity.
BODY_TOMBSTONE = b"-"

# KEYS[1]: the body key. ARGV: the body (ignored when burying), TTL seconds, mode ("fill",
# "commit" or "bury"), the tombstone. Returns 1 when it wrote, 0 when the cached copy stays.
_WRITE_LUA = """
local key, new, ttl, mode, tomb = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if mode == 'bury' then
  redis.call('SET', key, tomb, 'EX', ttl)
  return 1
end
local old = redis.call('GET', key)
if old == tomb then return 0 end  -- deleted: nothing brings it back
if old then
  -- A body's edited_at ('' when null, or when it is no body at all: below every edit).
  local function edited(raw)
    local ok, body = pcall(cjson.decode, raw)
    if ok and type(body) == 'table' and type(body.edited_at) == 'string' then
      return body.edited_at
    end
    return ''
  end
  local was, now = edited(old), edited(new)
  if now < was or (now == was and mode ~= 'commit') then return 0 end
end
redis.call('SET', key, new, 'EX', ttl)
return 1
"""
_WRITE_SHA = hashlib.sha1(_WRITE_LUA.encode()).hexdigest()  # noqa: S324 - Redis names scripts so


def _write_args(activity_id: int, body: bytes, mode: str) -> tuple:
    ttl = settings.FEEDSITE_BODY_TTL_SECONDS
    return (body_key(activity_id), body, ttl, mode, BODY_TOMBSTONE)


def _write(writes: Sequence[tuple[int, bytes, str]]) -> list[int]:
    """Run the script for each (activity id, body, mode): one pipelined round trip (per node on
    a cluster). Errors raise."""

    def run(sha: str) -> list:
        pipe = client().pipeline(transaction=False)
        for aid, body, mode in writes:
            pipe.execute_command("EVALSHA", sha, 1, *_write_args(aid, body, mode))
        return pipe.execute()

    return [int(n) for n in with_script(_WRITE_LUA, run)]


def set_bodies(bodies: Mapping[int, bytes], *, best_effort: bool = False) -> None:
    """Cache bodies loaded at some moment (a read filling what it did not find, fan-out): each
    written only where its key is missing or holds an older edit, never over a tombstone.
    ``best_effort`` (a read caching what it loaded from PostgreSQL): on a cluster, one scatter
    round with the read deadline, and a node that does not answer in time simply misses the
    write."""
    if not bodies:
        return
    if best_effort and is_cluster():
        _scatter_fill(bodies)
        return
    _write([(aid, body, "fill") for aid, body in bodies.items()])


def _scatter_fill(bodies: Mapping[int, bytes]) -> None:
    """set_bodies' best-effort round on a cluster: EVALSHA with the script's known digest; a
    node that lost its script cache (NOSCRIPT) gets its share again as EVAL, in one more
    round."""
    deadline = settings.FEEDSITE_READ_DEADLINE_MS / 1000
    args = {aid: _write_args(aid, body, "fill") for aid, body in bodies.items()}
    commands = [(a[0], ("EVALSHA", _WRITE_SHA, 1, *a)) for a in args.values()]
    replies, _ = scatter(commands, deadline)
    again = [
        (a[0], ("EVAL", _WRITE_LUA, 1, *a))
        for a, reply in zip(args.values(), replies, strict=True)
        if isinstance(reply, redis.exceptions.NoScriptError)
    ]
    if again:
        scatter(again, deadline)


def replace_body(activity_id: int, body: bytes) -> bool:
    """An edit's body, written once the edit committed: it replaces any older copy (and a copy
    of the same edit), never a tombstone. Errors raise: an edit must not answer before every
    later read sees it, a read a replica answers (connection.replicate: on a cluster with
    replicas, one of the master's replicas has it before this returns) included. Returns whether it was written (False: deleted, or a newer edit won)."""
    written = bool(_write([(activity_id, body, "commit")])[0])
    replicate([body_key(activity_id)])  # a hedged read (a replica) sees it too
    return written


def bury_body(activity_id: int) -> None:
    """A deleted activity: the tombstone at its body key (TTL: the bodies'), which no later
    write replaces and every read takes for "deleted". Errors raise."""
    bury_bodies([activity_id])


def bury_bodies(activity_ids: Sequence[int], *, replicated: bool = True) -> None:
    """bury_body for several activities: one pipelined round trip, then (``replicated``) the
    wait for a replica to have them (connection.replicate), so that a hedged read sees them
    too. A read that finds a body it cached was deleted meanwhile buries it without the wait:
    the delete's own bury waited."""
    if activity_ids:
        _write([(aid, b"", "bury") for aid in activity_ids])
        if replicated:
            replicate([body_key(aid) for aid in activity_ids])


def get_bodies(activity_ids: Sequence[int], *, tombstones: bool = False) -> dict[int, bytes]:
    """Bodies found in the cache; one pipelined round trip (GETs, not a cross-slot MGET). A
    deleted activity's tombstone is left out, or with ``tombstones`` returned as
    BODY_TOMBSTONE (the caller then knows not to look for it in PostgreSQL). On a cluster one
    scatter round with the read deadline: a body on a node that does not answer in time is not
    found (the caller reads it from PostgreSQL)."""
    if not activity_ids:
        return {}
    if is_cluster():
        keys = [body_key(a) for a in activity_ids]
        found, _ = scatter(
            [(k, ("GET", k)) for k in keys], settings.FEEDSITE_READ_DEADLINE_MS / 1000
        )
        replies = {
            a: raw for a, raw in zip(activity_ids, found, strict=True) if isinstance(raw, bytes)
        }
    else:
        pipe = client().pipeline(transaction=False)
        for aid in activity_ids:
            pipe.get(body_key(aid))
        replies = {a: raw for a, raw in zip(activity_ids, pipe.execute(), strict=True) if raw}
    if tombstones:
        return replies
    return {a: raw for a, raw in replies.items() if raw != BODY_TOMBSTONE}


def is_tombstone(raw: bytes | None) -> bool:
    """Whether a raw body (as get_bodies with ``tombstones`` or the page script return it) is
    a deleted activity's tombstone. Pure."""
    return raw == BODY_TOMBSTONE


def body_states(activity_ids: Sequence[int]) -> dict[int, str]:
    """Whether each body is "cached", "deleted" (its tombstone) or "absent" (never cached,
    expired or evicted): one pipelined round trip reading one byte of each."""
    if not activity_ids:
        return {}
    pipe = client().pipeline(transaction=False)
    for aid in activity_ids:
        pipe.getrange(body_key(aid), 0, 0)
    return {aid: body_state(head) for aid, head in zip(activity_ids, pipe.execute(), strict=True)}


def body_state(head: bytes | None) -> str:
    """ "cached", "deleted" or "absent", from the first byte of a body key (GETRANGE 0 0). Pure."""
    if not head:
        return "absent"
    return "deleted" if head == BODY_TOMBSTONE else "cached"


def delete_body(activity_id: int) -> None:
    """Drop a cached body (it is loaded from PostgreSQL again on the next read): for tools and
    tests; a delete buries (bury_body)."""
    client().delete(body_key(activity_id))


async def body_get_async(r, activity_id: int) -> bytes | None:
    """One body on the async client ``r`` (the stream gateway); None when it is not cached or
    the activity was deleted (its tombstone)."""
    raw: bytes | None = await r.get(body_key(activity_id))
    return None if raw == BODY_TOMBSTONE else raw
