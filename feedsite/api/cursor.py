"""Every cursor of the API, in one module: what each holds, how it is encoded and signed.

A cursor is opaque to clients: a JSON payload signed with Django's signing (HMAC-SHA256 over
SECRET_KEY, salted per kind), so a client can neither forge nor alter one, and rotating
SECRET_KEY with the old key in SECRET_KEY_FALLBACKS keeps cursors already handed out valid.

Two shapes:
  keyset   ``{"before": id}``: lists paged on a descending id (an author's activities,
           followers, following, blocks, mutes, an object's activities, followed objects); kinds
           "acts", "followers", "following", "blocks", "mutes", "objacts", "objects".
  feed     ``{"t": top, "c": last}`` and, once known, ``"e": edge`` (FeedCursor): the home
           feed, where items are groups of activities (feeds.aggregation); ``top`` is the newest
           id when paging began (newer arrivals wait for a fresh read), ``last`` the newest
           member of the last group shown, ``edge`` the id below which the pages come from
           PostgreSQL (past what the Redis feed holds, feeds.read.feed_page).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core import signing

from feedsite.errors import InvalidInput

T = TypeVar("T")
FEED = "feed"


def encode(kind: str, payload: dict[str, Any]) -> str:
    """A signed, URL-safe cursor of ``kind`` holding ``payload``."""
    return signing.Signer(salt=f"feedsite.cursor.{kind}").sign_object(payload)


def decode(kind: str, raw: str | None) -> dict[str, Any] | None:
    """The payload of a cursor of ``kind`` (None when absent); a 400 for anything forged,
    altered, truncated, of another kind or malformed."""
    if not raw:
        return None
    if ":" not in raw:  # not even the shape of a signed value
        raise InvalidInput("cursor is malformed", field="cursor")
    try:
        payload = signing.Signer(salt=f"feedsite.cursor.{kind}").unsign_object(raw)
    except signing.BadSignature:
        raise InvalidInput("cursor is invalid or was tampered with", field="cursor") from None
    except (ValueError, UnicodeError):
        raise InvalidInput("cursor is malformed", field="cursor") from None
    if not isinstance(payload, dict):
        raise InvalidInput("cursor is malformed", field="cursor")
    return payload


def _field(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput("cursor is malformed", field="cursor")
    return value


# --- keyset lists -----------------------------------------------------------------------------


def keyset_before(kind: str, raw: str | None) -> int | None:
    """The id a keyset page starts below (None: the first page)."""
    payload = decode(kind, raw)
    return None if payload is None else _field(payload, "before")


def keyset_page(
    rows: Sequence[T], *, limit: int, kind: str, key: Callable[[T], int]
) -> tuple[list[T], str | None]:
    """Rows fetched with ``limit + 1``: the page and the next page's cursor (None when this is
    the last page). Pure but for signing."""
    page = list(rows[:limit])
    more = len(rows) > limit and bool(page)
    return page, encode(kind, {"before": key(page[-1])}) if more else None


# --- the home feed ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedCursor:
    top: int  # the newest id when paging began: newer arrivals wait for the next fresh read
    last: int  # the newest member of the last group shown
    edge: int | None = None  # below this id, the page is read from PostgreSQL (None: not yet)


def feed_cursor_encode(cursor: FeedCursor, kind: str = FEED) -> str:
    payload = {"t": cursor.top, "c": cursor.last}
    if cursor.edge is not None:
        payload["e"] = cursor.edge
    return encode(kind, payload)


def feed_cursor_decode(raw: str | None, kind: str = FEED) -> FeedCursor | None:
    """A home-feed cursor (``kind``: "notifications" for the notification feed, which pages the
    same way; a cursor of one is refused by the other)."""
    payload = decode(kind, raw)
    if payload is None:
        return None
    edge = _field(payload, "e") if "e" in payload else None
    return FeedCursor(top=_field(payload, "t"), last=_field(payload, "c"), edge=edge)
