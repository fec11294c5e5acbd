"""Every Redis key of feedsite is built here; this docstring is the layout.

Prefix ``{p}`` from FEEDSITE_KEY_PREFIX (default ``fs``). Ids are 53-bit activity ids, exact as
a sorted-set score (member = score = id).

  {p}:feed:{user}            sorted set: the user's home feed (pushed ids, own ids), capped,
                             with an inactivity TTL; a built feed holds SENTINEL (score 0)
  {p}:tl:{author}            sorted set: the author's own timeline, capped (pull source)
  {p}:act:{id}               string: an activity's JSON body, stored once, with a TTL
  {p}:pull:{user}            string: cached pull-author ids, "tag:id,id,..." (TTL)
  {p}:hide:{user}            string: cached ids of authors the user does not see (muted,
                             blocked either way), "id,id,..." (TTL; rewritten on a change)
  {p}:pullver                counter: bumped when any author crosses the threshold
  {p}:mode:{author}          string: "pull" or "push", the author's mode last seen (no TTL)
  {p}:pushed:{author}        string: an activity id of the last time the author became a
                             push author (their pull-published activities may be in feeds)
  {p}:rebuild:{user}         string: a feed rebuild in progress (its lock, 30 s)
  {p}:parked:{user}          sorted set: what fan-out delivered during that rebuild (merged after)
  {p}:deliv:{job}:{batch}    counter: deliveries of one fan-out batch (poison guard, 1 day)
  {p}:unf:{author}           counter: unfollows of an author (check-after-write of fan-out)
  {p}:live:{author}          pub/sub channel: ids the author just published (SSE streams)
  {p}:follows-live:{user}    pub/sub channel: "+id"/"-id", the user followed/unfollowed id
  {p}:streams:{user}         sorted set: the user's open SSE streams, scored by last beat
  {p}:notif:{{user}}         sorted set: the user's notification feed (ids), capped
  {p}:unread:{{user}}        sorted set: the ids of that feed not read yet
  {p}:seen:{{user}}          string: every notification at or below this id is seen; its
                             existence marks the notification feed as built
                             (the three share the hash tag {user}: one slot, one script)
  {p}:stats:{name}           counter or histogram hash (/metrics)
  {p}:throttle:{scope}:{who}:{window}  counter: hits of one fixed throttle window
  {p}:tok:{digest}           string: the cached token entry (user fields), with a TTL
"""

from __future__ import annotations

from django.conf import settings


def prefix() -> str:
    return settings.FEEDSITE_KEY_PREFIX


def feed_key(user_id: int) -> str:
    return f"{prefix()}:feed:{user_id}"


def timeline_key(user_id: int) -> str:
    return f"{prefix()}:tl:{user_id}"


def timeline_author(key: str) -> int:
    """The author whose timeline ``key`` is (the inverse of timeline_key)."""
    return int(key.rsplit(":", 1)[1])


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
    return f"{prefix()}:rebuild:{user_id}"


def parked_key(user_id: int) -> str:
    return f"{prefix()}:parked:{user_id}"


def notif_key(user_id: int) -> str:
    return f"{prefix()}:notif:{{{user_id}}}"


def unread_key(user_id: int) -> str:
    return f"{prefix()}:unread:{{{user_id}}}"


def seen_key(user_id: int) -> str:
    return f"{prefix()}:seen:{{{user_id}}}"


def notification_keys(user_id: int) -> list[str]:
    """The user's notification feed, unread set and seen mark (one hash slot)."""
    return [notif_key(user_id), unread_key(user_id), seen_key(user_id)]


def stats_key(name: str) -> str:
    return f"{prefix()}:stats:{name}"


def live_channel(author_id: int | str) -> str:
    return f"{prefix()}:live:{author_id}"


def follows_channel(user_id: int | str) -> str:
    return f"{prefix()}:follows-live:{user_id}"


def streams_key(user_id: int) -> str:
    return f"{prefix()}:streams:{user_id}"


def pull_authors_key(user_id: int) -> str:
    return f"{prefix()}:pull:{user_id}"


def hidden_key(user_id: int) -> str:
    return f"{prefix()}:hide:{user_id}"


def author_mode_key(author_id: int) -> str:
    return f"{prefix()}:mode:{author_id}"


def went_push_key(author_id: int) -> str:
    return f"{prefix()}:pushed:{author_id}"


def pull_version_key() -> str:
    return f"{prefix()}:pullver"


def throttle_key(name: str, ident: str, window_no: int) -> str:
    return f"{prefix()}:throttle:{name}:{ident}:{window_no}"


# --- the warm feed read: two round trips -------------------------------------------------------


def token_key(digest: str) -> str:
    return f"{prefix()}:tok:{digest}"


# A built feed always exists: an empty one holds only this member (score 0), so a reader with no
# follows and no posts is not rebuilt on every read. When the feed is full, trimming removes it
# first (lowest score), and a full feed needs no marker.
SENTINEL = "0"
