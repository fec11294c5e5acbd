"""Moving a deployment's Redis keys from the first layout to the current one (feeds.store.keys):
feeds and timelines under their virtual shard's hash tag in lex encoding, notification feeds in
lex encoding under new names. ``manage.py migrate_feed_keys`` runs it.

Run it during the upgrade, after the old version's processes stopped and before any process of
the new version starts (web, stream and workers): from the moment the new version runs, fan-out
writes only to feeds of the new layout, so an old feed moved in later would lack what was
published meanwhile and, existing, would never be rebuilt. The move therefore refuses to run
once any feed, timeline or notification feed of the new layout exists; ``drop`` then deletes the
old keys instead (their owners' feeds are rebuilt from PostgreSQL when they next read).

Nothing here is required for correctness: the current code never reads the old names, and a
feed it does not find is rebuilt from PostgreSQL on its owner's next read. Moving keeps feeds
warm (no burst of rebuilds after an upgrade) and frees the memory the old keys hold. A key is
deleted only after its new copy is written, and a marker key stands while a move is under way,
so a move that stopped half-way is run again and continues; a run with nothing of the old
layout left does nothing.
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


class NewLayoutInUse(Exception):
    """Keys of the new layout exist: the new version has run, moving old feeds would lose what
    it delivered since (see the module docstring)."""


def new_layout_in_use(r, prefix: str) -> str | None:
    """A key of the current layout's feeds, timelines or notification feeds, if any exists."""
    for pattern in (f"{prefix}:feed:{{s*", f"{prefix}:tl:{{s*", f"{prefix}:nf:{{*"):
        for raw in r.scan_iter(match=pattern, count=1000):
            return raw.decode()
    return None


def migrate_keys(
    *, dry_run: bool = False, drop: bool = False, on_key: Callable[[], None] | None = None
) -> MoveReport:
    """Move every key of the old layout (see the module docstring); with ``drop``, delete them.
    Raises NewLayoutInUse when a move would come too late."""
    r, prefix = store.client(), store.prefix()
    marker = f"{prefix}:migrating:{{g}}"  # a move under way: a rerun after a crash continues it
    old_keys = list(_old_keys(r, prefix))
    if not old_keys:
        return MoveReport()  # nothing of the old layout: done (a second run)
    if not drop and not r.exists(marker) and (found := new_layout_in_use(r, prefix)):
        raise NewLayoutInUse(
            f"keys of the new layout exist ({found}): the new version has already run, and "
            "moving old feeds now would lose what it delivered since. Use --drop to delete the "
            "old keys instead (feeds are rebuilt from PostgreSQL on their owners' next read)."
        )
    report = MoveReport()
    if not dry_run and not drop:
        r.set(marker, "1")
    for key, kind, uid in old_keys:
        if on_key:
            on_key()
        if drop:
            report.dropped += 1
            if not dry_run:
                r.delete(key)
            continue
        if kind in ("parked", "rebuild"):
            report.dropped += 1
            if not dry_run:
                r.delete(key)
            continue
        report.moved[kind] = report.moved.get(kind, 0) + 1
        if dry_run:
            continue
        if kind in ("unread", "seen"):  # same encoding, same hash tag: a rename
            r.rename(key, store.unread_key(uid) if kind == "unread" else store.seen_key(uid))
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
    r.delete(marker)
    return report
