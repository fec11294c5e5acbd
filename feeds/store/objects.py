"""Objects (``object_type:object_id``) as feed sources: their timelines (the pull source of an
object at or above the celebrity threshold), their recorded mode, when they last became push
objects, and their unfollow counters (fan-out's check after write). Keys: keys.py, by the
object's digest (keys.object_digest). Every command touches one key."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .connection import client
from .feeds import _ids, add_to_sorted_set, write_sorted_set
from .keys import (
    encode_id,
    lex_stop,
    object_digest,
    object_mode_key,
    object_timeline_key,
    object_unfollows_key,
    object_went_push_key,
)

ObjectKey = tuple[str, str]


def object_timeline_add(obj: ObjectKey, activity_ids: Sequence[int], cap: int) -> bool:
    """Add to the object's timeline if it exists (capped); True when written (a missing one is
    rebuilt whole by whoever needs it: feeds.rebuild.object_timelines_rebuild)."""
    return add_to_sorted_set(object_timeline_key(*obj), activity_ids, cap)


def object_timeline_write(obj: ObjectKey, activity_ids: Sequence[int], cap: int) -> None:
    """A rebuilt object timeline: the ids merged in, with the built marker, capped."""
    write_sorted_set(object_timeline_key(*obj), activity_ids, cap)


def object_timelines_remove(objects: Iterable[ObjectKey], activity_ids: Sequence[int]) -> None:
    """Take ids out of several objects' timelines: one ZREM each, one pipelined round trip."""
    keys = [object_timeline_key(*o) for o in dict.fromkeys(objects)]
    if not keys or not activity_ids:
        return
    members = [encode_id(i) for i in activity_ids]
    pipe = client().pipeline(transaction=False)
    for key in keys:
        pipe.zrem(key, *members)
    pipe.execute()


def object_timeline_ids(obj: ObjectKey) -> list[int]:
    """Every id in an object's timeline, newest first (not the built marker)."""
    return _ids(client().zrangebylex(object_timeline_key(*obj), "-", lex_stop(None)))


def object_timeline_exists(obj: ObjectKey) -> bool:
    return bool(client().exists(object_timeline_key(*obj)))


def object_mode_swap(obj: ObjectKey, mode: str) -> str | None:
    """Record an object's mode ("pull" or "push"), returning the one recorded before (None:
    never), atomically (SET ... GET): of concurrent follows or unfollows that move an object
    across the threshold, exactly one sees the change."""
    old = client().set(object_mode_key(object_digest(*obj)), mode, get=True)
    return old.decode() if isinstance(old, bytes) else None


def mark_objects_went_push(objects: Iterable[ObjectKey], as_of_id: int) -> None:
    """These objects became push objects at ``as_of_id`` (an activity id made from the time)."""
    keys = [object_went_push_key(object_digest(*o)) for o in dict.fromkeys(objects)]
    if not keys:
        return
    pipe = client().pipeline(transaction=False)
    for key in keys:
        pipe.set(key, as_of_id)
    pipe.execute()


def object_went_push_since(obj: ObjectKey, activity_id: int) -> bool:
    """Whether the object may have been a push object after ``activity_id`` was published: it
    became one since, or nothing is known (the mode never recorded, Redis lost it)."""
    digest = object_digest(*obj)
    pipe = client().pipeline(transaction=False)  # two GETs: two slots on a cluster
    pipe.get(object_mode_key(digest))
    pipe.get(object_went_push_key(digest))
    mode, pushed = pipe.execute()
    if mode is None:
        return True
    return pushed is not None and int(pushed) >= activity_id


def objects_went_push_at(objects: Sequence[ObjectKey]) -> list[int | None]:
    """When each object last became a push object (None: not recorded): one round trip."""
    if not objects:
        return []
    pipe = client().pipeline(transaction=False)
    for obj in objects:
        pipe.get(object_went_push_key(object_digest(*obj)))
    return [None if v is None else int(v) for v in pipe.execute()]


def object_unfollow_counter_keys(objects: Iterable[ObjectKey]) -> list[str]:
    """The unfollow counters of objects (fan-out reads them before and after its writes)."""
    return [object_unfollows_key(object_digest(*o)) for o in objects]


def bump_object_unfollow_counter(obj: ObjectKey) -> None:
    """After an object unfollow commits, before its purge (as feeds.bump_unfollow_counter)."""
    client().incr(object_unfollows_key(object_digest(*obj)))
