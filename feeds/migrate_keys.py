"""Moving a deployment's Redis keys from the first layout to the current one (feeds.store.keys):
feeds and timelines under their virtual shard's hash tag in lex encoding, notification feeds in
lex encoding under new names. ``manage.py migrate_feed_keys`` runs it; run it with the Celery
workers stopped (a fan-out batch running meanwhile may write a feed of the new layout that the
move then merges into, which is harmless, but a rebuild's parked deliveries are not carried
over: the rebuild lock and parked sets of the old layout are dropped).

Nothing here is required for correctness: the current code never reads the old names, and a
feed it does not find is rebuilt from PostgreSQL on its owner's next read. Moving keeps feeds
warm (no burst of rebuilds after an upgrade) and frees the memory the old keys hold. Every step
is idempotent: a key is deleted only after its new copy is written, and a second run finds
nothing to move.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import store

# Old names: the user id right after the word, with no hash tag (notifications: {id}).
_OLD = {
    "feed": re.compile(r"^feed:(\d+)$"),
    "tl": re.compile(r"^tl:(\d+)$"),
    "notif": re.compile(r"^notif:\{(\d+)\}$"),
    "unread": re.compile(r"^unread:\{(\d+)\}$"),
    "seen": re.compile(r"^seen:\{(\d+)\}$"),
    "parked": re.compile(r"^parked:(\d+)$"),
    "rebuild": re.compile(r"^rebuild:(\d+)$"),
}


@dataclass
class MoveReport:
    moved: dict[str, int] = field(default_factory=dict)  # kind -> keys moved
    dropped: int = 0  # old rebuild locks and parked sets
    entries: int = 0  # feed entries re-encoded

    def summary(self) -> str:
        kinds = " ".join(f"{k}={n}" for k, n in sorted(self.moved.items()))
        return f"moved {kinds or 'nothing'}; dropped={self.dropped}; entries={self.entries}"


def old_key_user(key: str, prefix: str) -> tuple[str, int] | None:
    """(kind, user id) of a key of the old layout, None for any other key. Pure."""
    if not key.startswith(prefix + ":"):
        return None
    rest = key[len(prefix) + 1 :]
    for kind, pattern in _OLD.items():
        if m := pattern.match(rest):
            return kind, int(m.group(1))
    return None


def encoded_members(pairs: Any) -> dict[bytes, int]:
    """Old (member, score = id) pairs as the lex members of the new layout (the built marker
    stays the marker). Pure."""
    out: dict[bytes, int] = {}
    marker = store.SENTINEL.encode()
    for member, score in pairs:
        out[marker if member == marker else store.encode_id(int(score))] = 0
    return out


def _old_keys(r, prefix: str) -> Iterator[tuple[str, str, int]]:
    for word in ("feed", "tl", "notif", "unread", "seen", "parked", "rebuild"):
        for raw in r.scan_iter(match=f"{prefix}:{word}:*", count=1000):
            key = raw.decode()
            if (found := old_key_user(key, prefix)) is not None:
                yield key, *found


def migrate_keys(*, dry_run: bool = False, on_key: Callable[[], None] | None = None) -> MoveReport:
    """Move every key of the old layout (see the module docstring)."""
    r, prefix = store.client(), store.prefix()
    report = MoveReport()
    for key, kind, uid in list(_old_keys(r, prefix)):
        if on_key:
            on_key()
        if kind in ("parked", "rebuild"):
            report.dropped += 1
            if not dry_run:
                r.delete(key)
            continue
        report.moved[kind] = report.moved.get(kind, 0) + 1
        if dry_run:
            continue
        if kind in ("unread", "seen"):  # same encoding, same hash tag: a rename
            new = store.unread_key(uid) if kind == "unread" else store.seen_key(uid)
            if kind == "seen" and r.exists(new):
                r.delete(key)  # the new feed was built meanwhile: its mark wins
            else:
                _rename_merging(r, key, new)
            continue
        new = {
            "feed": store.feed_key,
            "tl": store.timeline_key,
            "notif": store.notif_key,
        }[kind](uid)
        members = encoded_members(r.zrange(key, 0, -1, withscores=True))
        report.entries += len(members)
        ttl = r.pttl(key)
        pipe = r.pipeline(transaction=False)
        if members:
            pipe.zadd(new, members)
        if ttl > 0:
            pipe.pexpire(new, ttl)
        pipe.execute()
        r.delete(key)
    return report


def _rename_merging(r, old: str, new: str) -> None:
    """RENAME, except a sorted set that exists under the new name gets the old one merged in."""
    if r.type(old) == b"zset" and r.exists(new):
        pairs = r.zrange(old, 0, -1, withscores=True)
        if pairs:
            r.zadd(new, dict(pairs))
        r.delete(old)
    else:
        r.rename(old, new)
