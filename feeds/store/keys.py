"""Every Redis key of feedsite is built here; this docstring is the layout.

Prefix ``{p}`` from FEEDSITE_KEY_PREFIX (default ``fs``). Ids are 53-bit activity ids.

Feeds and timelines are sorted sets in *newest-first lex encoding*: every member has score 0 and
is ``MAX_ID - id`` as 7 big-endian bytes (``encode_id``), so the newest id sorts first: ZRANGEBYLEX
from ``-`` reads a feed newest first, and ZRANGEBYRANK's tail is its oldest end. Fan-out adds a new
id, which sorts first: Redis' compact encoding (a listpack) inserts it at the head without
walking the feed, where an oldest-first layout walked all 500 entries to the tail on every add
(on full feeds of 500, Redis 7.0: ZADD 5.4 us and the trim 0.5 us here, against 17-26 us for add
and trim in the oldest-first layout; bench/fanout.py prints both). Trimming removes the tail,
the oldest entries. A full feed costs 11 bytes an
entry in the listpack (a 7-byte string and a 0 score, with their headers), 12.4 with the
allocator's rounding, where a 53-bit member plus a 53-bit score cost 20.

Earlier layouts use other key names, so this code never misreads them: the first (before
virtual shards: ``{p}:feed:{user}``, ``{p}:tl:{user}``, ``{p}:notif:{{user}}``, member = score =
id) and the second (oldest-first lex encoding: ``{p}:feed:{s<v>}:{user}``, ``{p}:tl:{s<v>}:...``,
``{p}:parked:...``, ``{p}:nf:{{user}}``, ``{p}:nf-unread:...``, ``{p}:nf-seen:...``). Their feeds
are rebuilt from PostgreSQL when read, and ``manage.py migrate_feed_keys`` moves them over warm
(feeds.store.migrate).

Virtual shards: a user's feed-side keys carry the hash tag ``{s<v>}``, v = user id mod VSHARDS
(``vshard``), so on Redis Cluster the feeds of one virtual shard share a hash slot: fan-out
orders followers by (virtual shard, id) and writes each shard's part of a batch with one Lua call
on the node that owns it. VSHARDS is fixed: changing it moves every feed (``manage.py
migrate_feed_keys`` moves keys of an earlier layout; a missing feed is also rebuilt from
PostgreSQL on its owner's next read).

  {p}:home:{s<v>}:{user}     sorted set (lex): the user's home feed (pushed ids, own ids),
                             capped, with an inactivity TTL; a built feed holds SENTINEL
                             while it holds its whole history (never trimmed, no follow's
                             backfill left older activities out): below its oldest entry
                             otherwise, pages come from PostgreSQL (feeds.read.feed_page)
  {p}:line:{s<v>}:{author}   sorted set (lex): the author's own timeline, capped (pull source);
                             SENTINEL while never trimmed (the author's whole history)
  {p}:act:{id}               string: an activity's JSON body, stored once, with a TTL; after
                             its delete the tombstone "-" (bodies.BODY_TOMBSTONE, same TTL),
                             which no write replaces (bodies: one compare-and-set by edited_at)
  {p}:pull:{user}            string: the reader's cached pull sources (TTL):
                             "tag+o:id,id,...|digest,digest,...", the pull authors, then the
                             digests of the pull objects they follow ("+o": not the authors-only
                             list of earlier versions, "tag:id,id,...")
  {p}:hide:{user}            string: cached ids of authors the user does not see (muted,
                             blocked either way), "id,id,..." (TTL; rewritten on a change)
  {p}:pullver:{g}            counter: bumped when any author or object crosses the threshold
  {p}:mode:{author}          string: "pull" or "push", the author's mode last seen (no TTL)
  {p}:pushed:{author}        string: an activity id of the last time the author became a
                             push author (their pull-published activities may be in feeds)
  {p}:rebuild:{s<v>}:{user}  string: a feed rebuild in progress (its lock, 30 s)
  {p}:park:{s<v>}:{user}     sorted set (lex): what fan-out delivered during that rebuild
                             (merged after); the three share the feed's slot
  {p}:deliv:{job}:{batch}    counter: deliveries of one fan-out batch (poison guard, 1 day)
  {p}:unf:{author}           counter: unfollows of an author (check-after-write of fan-out)
  {p}:oline:{s<v>}:{digest}  sorted set (lex): an object's timeline, the newest home activities
                             whose object or target it is, capped (pull source); SENTINEL while
                             never trimmed. digest = object_digest(type, id), v = its shard
                             (object_vshard). Kept while the object has followers.
  {p}:omode:{digest}         string: "pull" or "push", the object's mode last seen (no TTL)
  {p}:opushed:{digest}       string: an activity id of the last time the object became a push
                             object (as {p}:pushed: for authors)
  {p}:ounf:{digest}          counter: unfollows of an object (check-after-write of fan-out)
  {p}:live:{author}          pub/sub channel: ids the author just published (SSE streams)
  {p}:follows-live:{user}    pub/sub channel: "+id"/"-id", the user followed/unfollowed id
  {p}:streams:{user}         sorted set: the user's open SSE streams, scored by last beat
  {p}:sent:{user}            sorted set: what the user's SSE streams sent (the catch-up ledger,
                             feeds.replay): "<stream>:<activity id>" scored by the event id
                             that carried it, "<stream>:f" its floor, "<stream>:r" retired
  {p}:notes:{{user}}         sorted set (lex): the user's notification feed (ids), capped;
                             SENTINEL while it holds every notification of the user (built
                             from fewer rows than the cap, never trimmed since)
  {p}:notes-unread:{{user}}  sorted set: the ids of that feed not read yet (member = score = id)
  {p}:notes-seen:{{user}}    string: every notification at or below this id is seen; its
                             existence marks the notification feed as built
                             (the three share the hash tag {user}: one slot, one script)
  {p}:stats:{g}:{name}       counter or histogram hash (/metrics)
                             (the global keys share the hash tag {g}: on a cluster they live
                             on one node, which every read and write touches)
  {p}:throttle:{scope}:{who}:{window}  counter: hits of one fixed throttle window
  {p}:tok:{digest}           string: the cached token entry (user fields), with a TTL
"""

from __future__ import annotations

import hashlib

from django.conf import settings

from feedsite.shards import VSHARDS, vshard


def prefix() -> str:
    return settings.FEEDSITE_KEY_PREFIX


ID_WIDTH = 7  # bytes of a feed member
MAX_ID = (1 << 53) - 1


def shard_tag(user_id: int) -> str:
    """The hash tag of the user's virtual shard (feedsite.shards): ``{s<v>}``."""
    return f"{{s{vshard(user_id)}}}"


def encode_id(activity_id: int) -> bytes:
    """A feed member: ``MAX_ID - id`` as 7 big-endian bytes (byte order = newest first). Pure."""
    if not 0 <= activity_id <= MAX_ID:
        raise ValueError(f"activity id out of range: {activity_id}")
    return (MAX_ID - activity_id).to_bytes(ID_WIDTH, "big")


def decode_id(member: bytes) -> int:
    """The id of a feed member (encode_id's inverse). Pure."""
    return MAX_ID - int.from_bytes(member, "big")


# decode_id in Lua, for the scripts that read feed members (body keys, merges by id).
DECODE_ID_LUA = """
local function num(m)  -- a feed member's id (keys.encode_id): MAX_ID minus 7 big-endian bytes
  local a, b, c, d, e, f, g = string.byte(m, 1, 7)  -- one call: a third of the merge's time
  return 9007199254740991 - (((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + f) * 256 - g
end
"""


def lex_start(max_id: int | None) -> bytes:
    """ZRANGEBYLEX min bound of a newest-first read: members at or below ``max_id`` (None: from
    the newest)."""
    return b"-" if max_id is None else b"[" + encode_id(min(max(max_id, 0), MAX_ID))


def lex_stop(min_id: int | None) -> bytes:
    """ZRANGEBYLEX max bound of a newest-first read: members at or above ``min_id``, never the
    SENTINEL (None, 0 or below: every id)."""
    if min_id is None or min_id <= 0:
        return b"(" + SENTINEL.encode()
    return b"[" + encode_id(min(min_id, MAX_ID))


def feed_key(user_id: int) -> str:
    return f"{prefix()}:home:{shard_tag(user_id)}:{user_id}"


def timeline_key(user_id: int) -> str:
    return f"{timeline_key_head()}{shard_tag(user_id)}:{user_id}"


def timeline_key_head() -> str:
    """What every timeline key starts with (the warm read's script builds the keys of a
    reader's pull authors from it, as timeline_key does)."""
    return f"{prefix()}:line:"


def timeline_author(key: str) -> int:
    """The author whose timeline ``key`` is (the inverse of timeline_key)."""
    return int(key.rsplit(":", 1)[1])


# --- objects (``object_type:object_id``) as feed sources --------------------------------------


def object_digest(object_type: str, object_id: str) -> str:
    """An object's name in keys: 20 hex digits of SHA-1 over ``len(type):type:id`` (the length
    keeps "a:b" + "c" apart from "a" + "b:c"; ids may hold ':' and '/'). Pure."""
    raw = f"{len(object_type)}:{object_type}:{object_id}".encode()
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:20]


def object_vshard(digest: str) -> int:
    """The virtual shard of an object's timeline: its digest's first 32 bits mod VSHARDS (the
    warm read's script computes the same from the digest). Pure."""
    return int(digest[:8], 16) % VSHARDS


def object_timeline_key_head() -> str:
    """What every object timeline key starts with (the warm read's script builds them too)."""
    return f"{prefix()}:oline:"


def object_timeline_key_of(digest: str) -> str:
    return f"{object_timeline_key_head()}{{s{object_vshard(digest)}}}:{digest}"


def object_timeline_key(object_type: str, object_id: str) -> str:
    return object_timeline_key_of(object_digest(object_type, object_id))


def is_object_timeline_key(key: str) -> bool:
    return key.startswith(object_timeline_key_head())


def object_timeline_digest(key: str) -> str:
    """The digest of the object whose timeline ``key`` is."""
    return key.rsplit(":", 1)[1]


def object_mode_key(digest: str) -> str:
    return f"{prefix()}:omode:{digest}"


def object_went_push_key(digest: str) -> str:
    return f"{prefix()}:opushed:{digest}"


def object_unfollows_key(digest: str) -> str:
    return f"{prefix()}:ounf:{digest}"


def body_prefix() -> str:
    """What every body key starts with (the page script appends the id)."""
    return f"{prefix()}:act:"


def body_key(activity_id: int) -> str:
    return f"{body_prefix()}{activity_id}"


def deliveries_key(job_id: int, batch_no: int) -> str:
    return f"{prefix()}:deliv:{job_id}:{batch_no}"


def unfollows_key(author_id: int) -> str:
    return f"{prefix()}:unf:{author_id}"


def rebuild_lock_key(user_id: int) -> str:
    return f"{prefix()}:rebuild:{shard_tag(user_id)}:{user_id}"


def parked_key(user_id: int) -> str:
    return f"{prefix()}:park:{shard_tag(user_id)}:{user_id}"


def notif_key(user_id: int) -> str:
    return f"{prefix()}:notes:{{{user_id}}}"


def unread_key(user_id: int) -> str:
    return f"{prefix()}:notes-unread:{{{user_id}}}"


def seen_key(user_id: int) -> str:
    return f"{prefix()}:notes-seen:{{{user_id}}}"


def notification_keys(user_id: int) -> list[str]:
    """The user's notification feed, unread set and seen mark (one hash slot)."""
    return [notif_key(user_id), unread_key(user_id), seen_key(user_id)]


def stats_key(name: str) -> str:
    return f"{prefix()}:stats:{{g}}:{name}"


def live_channel(author_id: int | str) -> str:
    return f"{prefix()}:live:{author_id}"


def follows_channel(user_id: int | str) -> str:
    return f"{prefix()}:follows-live:{user_id}"


def streams_key(user_id: int) -> str:
    return f"{prefix()}:streams:{user_id}"


def stream_ledger_key(user_id: int) -> str:
    return f"{prefix()}:sent:{user_id}"


def pull_authors_key(user_id: int) -> str:
    return f"{prefix()}:pull:{user_id}"


def hidden_key(user_id: int) -> str:
    return f"{prefix()}:hide:{user_id}"


def author_mode_key(author_id: int) -> str:
    return f"{prefix()}:mode:{author_id}"


def went_push_key(author_id: int) -> str:
    return f"{prefix()}:pushed:{author_id}"


def pull_version_key() -> str:
    return f"{prefix()}:pullver:{{g}}"


def throttle_key(name: str, ident: str, window_no: int) -> str:
    return f"{prefix()}:throttle:{name}:{ident}:{window_no}"


# --- the warm feed read: its prelude ----------------------------------------------------------


def token_key(digest: str) -> str:
    return f"{prefix()}:tok:{digest}"


# A built feed always exists: an empty one holds only this member, so a reader with no follows
# and no posts is not rebuilt on every read. It sorts after every encoded id (whose first byte is
# at most 0x1f): when the feed is full, trimming the tail removes it first, and a full feed needs
# no marker.
SENTINEL = "~"
