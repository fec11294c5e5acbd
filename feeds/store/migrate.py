"""Moving a deployment's Redis keys from an earlier layout to the current one (keys.py), warm:
``manage.py migrate_feed_keys`` runs it. Two earlier layouts are known:

- the first: feeds and timelines without a virtual-shard hash tag, member = score = id
  (``{p}:feed:{user}``, ``{p}:tl:{user}``, ``{p}:notif:{{user}}``, ``{p}:unread:...``, ...);
- the second: oldest-first lex encoding (7 big-endian bytes with the top bit set, score 0, the
  built marker "0"): ``{p}:feed:{s<v>}:{user}``, ``{p}:tl:{s<v>}:...``, ``{p}:parked:...``,
  ``{p}:nf:{{user}}``, ``{p}:nf-unread:{{user}}``, ``{p}:nf-seen:{{user}}``.

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
so a move that stopped half-way is run again and continues; a run with nothing of an old
layout left does nothing. Where a user has keys of both earlier layouts (a deployment that went
from the first to the second without moving), the second's are the current ones: the first's
are stale (deliveries since went only to the second) and are dropped, never merged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .connection import client
from .keys import (
    SENTINEL,
    encode_id,
    feed_key,
    notif_key,
    prefix,
    seen_key,
    timeline_key,
    unread_key,
)

# (kind, layout, pattern) of an old key: the user id is the pattern's group. The rebuild lock of
# the second layout keeps its name (a plain string marker): it is not an old key.
_OLD: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("feed", "score", re.compile(r"^feed:(\d+)$")),
    ("tl", "score", re.compile(r"^tl:(\d+)$")),
    ("notif", "score", re.compile(r"^notif:\{(\d+)\}$")),
    ("unread", "score", re.compile(r"^unread:\{(\d+)\}$")),
    ("seen", "score", re.compile(r"^seen:\{(\d+)\}$")),
    ("parked", "score", re.compile(r"^parked:(\d+)$")),
    ("rebuild", "score", re.compile(r"^rebuild:(\d+)$")),
    ("feed", "lex2", re.compile(r"^feed:\{s\d+\}:(\d+)$")),
    ("tl", "lex2", re.compile(r"^tl:\{s\d+\}:(\d+)$")),
    ("notif", "lex2", re.compile(r"^nf:\{(\d+)\}$")),
    ("unread", "lex2", re.compile(r"^nf-unread:\{(\d+)\}$")),
    ("seen", "lex2", re.compile(r"^nf-seen:\{(\d+)\}$")),
    ("parked", "lex2", re.compile(r"^parked:\{s\d+\}:(\d+)$")),
)
_OLD_WORDS = (
    "feed",
    "tl",
    "notif",
    "unread",
    "seen",
    "parked",
    "rebuild",
    "nf",
    "nf-unread",
    "nf-seen",
)
_LEX2_TOP = 1 << 55  # the second layout's member: id | top bit, 7 bytes
_OLD_MARKER = b"0"  # both earlier layouts' built marker


@dataclass
class MoveReport:
    moved: dict[str, int] = field(default_factory=dict)  # kind -> keys moved
    dropped: int = 0  # old rebuild locks and parked sets
    entries: int = 0  # feed entries re-encoded

    def summary(self) -> str:
        kinds = " ".join(f"{k}={n}" for k, n in sorted(self.moved.items()))
        return f"moved {kinds or 'nothing'}; dropped={self.dropped}; entries={self.entries}"


def _old_key(key: str, key_prefix: str) -> tuple[str, str, int] | None:
    """(kind, layout, user id) of a key of an earlier layout, None for any other key. Pure."""
    if not key.startswith(key_prefix + ":"):
        return None
    rest = key[len(key_prefix) + 1 :]
    for kind, layout, pattern in _OLD:
        if m := pattern.match(rest):
            return kind, layout, int(m.group(1))
    return None


def old_key_user(key: str, key_prefix: str) -> tuple[str, int] | None:
    """(kind, user id) of a key of an earlier layout, None for any other key. Pure."""
    found = _old_key(key, key_prefix)
    return None if found is None else (found[0], found[2])


def encoded_members(pairs: Any, layout: str = "score") -> dict[bytes, int]:
    """An old sorted set's (member, score) pairs as the members of the current layout (the
    built marker stays the marker). ``layout``: "score" (member = score = id) or "lex2" (the
    second layout's members). Pure."""
    out: dict[bytes, int] = {}
    for member, score in pairs:
        if member == _OLD_MARKER:
            out[SENTINEL.encode()] = 0
        elif layout == "lex2":
            out[encode_id(int.from_bytes(member, "big") & (_LEX2_TOP - 1))] = 0
        else:
            out[encode_id(int(score))] = 0
    return out


def _old_keys(r, key_prefix: str) -> Iterator[tuple[str, str, str, int]]:
    for word in _OLD_WORDS:
        for raw in r.scan_iter(match=f"{key_prefix}:{word}:*", count=1000):
            key = raw.decode()
            if (found := _old_key(key, key_prefix)) is not None:
                yield key, *found


class NewLayoutInUse(Exception):
    """Keys of the new layout exist: the new version has run, moving old feeds would lose what
    it delivered since (see the module docstring)."""


def new_layout_in_use() -> str | None:
    """A key of the current layout's feeds, timelines or notification feeds, if any exists."""
    r, p = client(), prefix()
    for pattern in (f"{p}:home:{{s*", f"{p}:line:{{s*", f"{p}:notes:{{*"):
        for raw in r.scan_iter(match=pattern, count=1000):
            return raw.decode()
    return None


def migrate_keys(
    *, dry_run: bool = False, drop: bool = False, on_key: Callable[[], None] | None = None
) -> MoveReport:
    """Move every key of an earlier layout (see the module docstring); with ``drop``, delete
    them. Raises NewLayoutInUse when a move would come too late."""
    r, p = client(), prefix()
    marker = f"{p}:migrating:{{g}}"  # a move under way: a rerun after a crash continues it
    old_keys = list(_old_keys(r, p))
    if not old_keys:
        return MoveReport()  # nothing of an old layout: done (a second run)
    if not drop and not r.exists(marker) and (found := new_layout_in_use()):
        raise NewLayoutInUse(
            f"keys of the new layout exist ({found}): the new version has already run, and "
            "moving old feeds now would lose what it delivered since. Use --drop to delete the "
            "old keys instead (feeds are rebuilt from PostgreSQL on their owners' next read)."
        )
    report = MoveReport()
    if not dry_run and not drop:
        r.set(marker, "1")
    newer = {(kind, uid) for _, kind, layout, uid in old_keys if layout == "lex2"}
    for key, kind, layout, uid in old_keys:
        if on_key:
            on_key()
        superseded = layout == "score" and (kind, uid) in newer
        if drop or kind in ("parked", "rebuild") or superseded:
            report.dropped += 1
            if not dry_run:
                r.delete(key)
            continue
        report.moved[kind] = report.moved.get(kind, 0) + 1
        if dry_run:
            continue
        if kind in ("unread", "seen"):  # same encoding, same hash tag: a rename
            r.rename(key, unread_key(uid) if kind == "unread" else seen_key(uid))
            continue
        new = {"feed": feed_key, "tl": timeline_key, "notif": notif_key}[kind](uid)
        members = encoded_members(r.zrange(key, 0, -1, withscores=True), layout)
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
