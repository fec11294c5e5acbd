"""The token cache: the fields of a token's user, under a digest of the token."""

from __future__ import annotations

from collections.abc import Sequence

from .connection import client
from .keys import token_key


def token_get(digest: str) -> bytes | None:
    raw: bytes | None = client().get(token_key(digest))  # type: ignore[assignment]
    return raw


def token_set(digest: str, value: bytes, ttl: int) -> None:
    client().set(token_key(digest), value, ex=ttl)


def token_delete(digests: Sequence[str]) -> None:
    if digests:
        client().delete(*(token_key(d) for d in digests))
