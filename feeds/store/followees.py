"""The cached followee list of each user: what a stream's connect listens to, read with the
token entry in one round trip, so a connect (and a reconnect storm of thousands) runs no SQL
while the caches are warm.

    {p}:fol:{user}  hash: one field per followee id ("1") and per followed object ("o" and its
                    digest, keys.object_digest), "#b" once it holds the whole list
                    (built from PostgreSQL), "#v" the count of follow changes seen

Kept current the way the follow changes it, never rebuilt on a write: a follow or unfollow,
after its commit, bumps "#v" and, on a built list, adds or removes its one field (one script,
one key). A miss is filled from PostgreSQL by whoever needs it, with the "#v" it read before
its query: the fill writes only while "#v" is unchanged, so a query that ran before a follow
committed cannot write a list without it (the change bumped "#v" after its commit). Its
lifetime (FEEDSITE_FOLLOWEES_CACHE_SECONDS, from the fill or the last change; a connect does not
renew it) bounds how long a change whose write was lost (Redis down at that moment) goes unseen."""

from __future__ import annotations

from collections.abc import Sequence

from .connection import client, with_script
from .keys import object_digest, prefix

BUILT, VERSION = b"#b", b"#v"
# KEYS[1]: the list. ARGV: followee id, "1" follow / "0" unfollow, TTL.
_CHANGE_LUA = """
local key = KEYS[1]
redis.call('HINCRBY', key, '#v', 1)
if redis.call('HEXISTS', key, '#b') == 1 then
  if ARGV[2] == '1' then redis.call('HSET', key, ARGV[1], 1)
  else redis.call('HDEL', key, ARGV[1]) end
end
redis.call('EXPIRE', key, ARGV[3])
return 1
"""

# KEYS[1]: the list. ARGV: the "#v" read before the query, TTL, then the followee ids.
# HSET takes 2,000 fields a call (Lua's stack holds ~8,000 values).
# Returns 1 when written, 0 when a change came in between (or another fill won).
_FILL_LUA = """
local key = KEYS[1]
local v = redis.call('HGET', key, '#v') or '0'
if v ~= ARGV[1] or redis.call('HEXISTS', key, '#b') == 1 then return 0 end
redis.call('HSET', key, '#b', 1)
local args = {}
for i = 3, #ARGV do
  args[#args + 1] = ARGV[i]
  args[#args + 1] = 1
  if #args >= 4000 then redis.call('HSET', key, unpack(args)); args = {} end
end
if #args > 0 then redis.call('HSET', key, unpack(args)) end
redis.call('EXPIRE', key, ARGV[2])
return 1
"""


def followees_key(user_id: int) -> str:
    return f"{prefix()}:fol:{user_id}"


Source = int | str  # a followee's id, or "o" + a followed object's digest


def object_source(object_type: str, object_id: str) -> str:
    """A followed object's name in the list and on the live channels: "o" + its digest. Pure."""
    return f"o{object_digest(object_type, object_id)}"


def followees_from_cache(raw: dict[bytes, bytes] | None) -> tuple[frozenset[Source] | None, int]:
    """(the cached followees: user ids and object names; None when the list is not built; its
    "#v") from HGETALL's reply. Pure."""
    raw = raw or {}
    version = int(raw.get(VERSION, b"0"))
    if BUILT not in raw:
        return None, version
    return frozenset(
        k.decode() if k.startswith(b"o") else int(k) for k in raw if not k.startswith(b"#")
    ), version


def followees_change(user_id: int, followee_id: Source, following: bool, ttl: int) -> None:
    """A committed follow (or unfollow) of ``user_id``'s, of a user or an object (its name),
    into the cached list."""
    key = followees_key(user_id)
    args = (str(followee_id), "1" if following else "0", ttl)
    with_script(_CHANGE_LUA, lambda sha: client().evalsha(sha, 1, key, *args))


def followees_fill(user_id: int, version: int, ids: Sequence[Source], ttl: int) -> bool:
    """Cache the list read from PostgreSQL after "#v" read ``version``; False when a follow
    change came in between (the list stays unbuilt; the next reader fills it)."""
    key = followees_key(user_id)
    args = [str(version), str(ttl), *map(str, ids)]
    return bool(with_script(_FILL_LUA, lambda sha: client().evalsha(sha, 1, key, *args)))


def followees_version(user_id: int) -> int:
    """The list's "#v" (0 when absent): read before a fill's query."""
    return int(client().hget(followees_key(user_id), VERSION) or 0)
