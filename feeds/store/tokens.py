"""The token cache: the fields of a token's user, under a digest of the token; a revoked or
changed token's entry is a tombstone for a while, which a refill cannot overwrite."""

from __future__ import annotations

from collections.abc import Sequence

from .connection import client
from .keys import token_key

# The entry of a token whose cache must not be trusted nor filled (revoked, its user changed):
# not JSON, so neither the warm read's script nor the auth code takes it for a user.
TOMBSTONE = b"-"


def token_get(digest: str) -> bytes | None:
    raw: bytes | None = client().get(token_key(digest))  # type: ignore[assignment]
    return raw


def token_set(digest: str, value: bytes, ttl: int) -> None:
    """Write the entry, whatever is there (tests, tools); requests use token_fill."""
    client().set(token_key(digest), value, ex=ttl)


def token_fill(digest: str, value: bytes, ttl: int) -> bool:
    """Cache a lookup's result unless the key holds anything (SET NX): a tombstone written
    while the lookup ran stands. Whether it was written."""
    return bool(client().set(token_key(digest), value, ex=ttl, nx=True))


def token_tombstone(digests: Sequence[str], ttl: int) -> None:
    """Replace these entries by tombstones for ``ttl`` seconds: one pipelined round trip of
    single-key SETs (Redis Cluster splits it per node). Raises when Redis cannot write."""
    if not digests:
        return
    pipe = client().pipeline(transaction=False)
    for digest in digests:
        pipe.set(token_key(digest), TOMBSTONE, ex=ttl)
    pipe.execute()


def token_delete(digests: Sequence[str]) -> None:
    if digests:
        client().delete(*(token_key(d) for d in digests))
