"""Virtual shards: the fixed grouping of users that feed keys and fan-out batches share. Pure.

A user's feed-side Redis keys carry the hash tag of their virtual shard (feeds.store.keys), so on
Redis Cluster one shard's feeds share a hash slot and one Lua call writes them all. Fan-out reads
an author's followers in *shard order* (shard, then id), so each batch is a run of whole or
partial shards: a few calls per batch, not one command per follower. The same order is an
expression index on the follows table (follows migration 0003), whose SQL is SHARD_ORDER_SQL.

VSHARDS is fixed: a different number is a different key layout (``manage.py migrate_feed_keys``).
"""

from __future__ import annotations

VSHARDS = 1024
ORDER_SHIFT = 1 << 40  # user ids stay below 2**40
SHARD_ORDER_SQL = f"((follower_id % {VSHARDS}) * {ORDER_SHIFT} + follower_id)"


def vshard(user_id: int) -> int:
    return user_id % VSHARDS


def shard_order(user_id: int) -> int:
    """A follower's place in fan-out order: by virtual shard, then id."""
    return (user_id % VSHARDS) * ORDER_SHIFT + user_id
