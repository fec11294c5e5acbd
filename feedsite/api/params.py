"""Query parameters shared by every paged endpoint: limit and an opaque cursor."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from feeds.cursor import CursorError, decode_cursor, encode_cursor
from feedsite.errors import InvalidInput

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def parse_limit(raw: str | None, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"limit must be an integer from 1 to {maximum}", field="limit") from None
    if not 1 <= value <= maximum:
        raise InvalidInput(f"limit must be an integer from 1 to {maximum}", field="limit")
    return value


def _key(kind: str) -> bytes:
    return f"{settings.SECRET_KEY}:cursor:{kind}".encode()


def make_cursor(kind: str, payload: dict[str, Any]) -> str:
    return encode_cursor(payload, _key(kind))


def parse_cursor(kind: str, raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        return decode_cursor(raw, _key(kind))
    except CursorError as exc:
        raise InvalidInput(str(exc), field="cursor") from None


def cursor_int(payload: dict[str, Any] | None, name: str) -> int | None:
    if payload is None:
        return None
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput("cursor is malformed", field="cursor")
    return value
