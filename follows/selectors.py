"""Reads over follows: keyset ranges of follower ids, never OFFSET over the whole set."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection

from feedsite.shards import SHARD_ORDER_SQL

from .models import Block, Follow, Mute, UserStats

# In a query with parameters: '%' doubled.
_ORDER = SHARD_ORDER_SQL.replace("%", "%%")


def follower_id_boundaries(*, followee_id: int, batch_size: int) -> list[int]:
    """Every ``batch_size``-th follower in shard order (feedsite.shards), as its order key,
    ascending: batch k covers (b[k-1], b[k]], the last one (b[-1], +inf). One pass over the
    (followee, shard order) index inside the database; only the boundaries (followers /
    batch_size keys) reach Python, never the follower list."""
    table = Follow._meta.db_table
    sql = (
        f"SELECT k FROM (SELECT {_ORDER} AS k, "  # noqa: S608 - table name from model meta
        f"ROW_NUMBER() OVER (ORDER BY {_ORDER}) AS rn FROM {table} "
        "WHERE followee_id = %s) AS numbered WHERE rn %% %s = 0 ORDER BY k"
    )
    with connection.cursor() as cur:
        cur.execute(sql, [followee_id, batch_size])
        return [row[0] for row in cur.fetchall()]


def batch_ranges(boundaries: list[int]) -> list[tuple[int | None, int | None]]:
    """(lo exclusive, hi inclusive) per batch; None is open. Pure."""
    los: list[int | None] = [None, *boundaries]
    his: list[int | None] = [*boundaries, None]
    return list(zip(los, his, strict=True))


def follower_ids_in_range(*, followee_id: int, lo: int | None, hi: int | None) -> list[int]:
    """The author's followers whose shard order lies in (lo, hi] (None: open), in that order:
    a batch of fan-out, grouped by virtual shard."""
    table = Follow._meta.db_table
    where, params = ["followee_id = %s"], [followee_id]
    if lo is not None:
        where.append(f"{_ORDER} > %s")
        params.append(lo)
    if hi is not None:
        where.append(f"{_ORDER} <= %s")
        params.append(hi)
    sql = (
        f"SELECT follower_id FROM {table} WHERE {' AND '.join(where)} "  # noqa: S608 - constants
        f"ORDER BY {_ORDER}"
    )
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return [row[0] for row in cur.fetchall()]


def follower_count(*, user_id: int) -> int:
    return (
        UserStats.objects.filter(user_id=user_id).values_list("followers_count", flat=True).first()
        or 0
    )


def user_ids_with_followers_in(*, lo: int, hi: int) -> list[int]:
    """Users with at least ``lo`` and fewer than ``hi`` followers."""
    return list(
        UserStats.objects.filter(followers_count__gte=lo, followers_count__lt=hi).values_list(
            "user_id", flat=True
        )
    )


def followee_ids_with_min_followers(*, follower_id: int, min_followers: int) -> list[int]:
    """Authors the user follows who are at or above the celebrity threshold (pull authors).
    On every feed read: one index probe per followee on (follower, followee) and the stats PK."""
    sql = (
        f"SELECT f.followee_id FROM {Follow._meta.db_table} f JOIN {UserStats._meta.db_table} s "  # noqa: S608 - table names from model meta
        "ON s.user_id = f.followee_id WHERE f.follower_id = %s AND s.followers_count >= %s"
    )
    with connection.cursor() as cur:
        cur.execute(sql, [follower_id, min_followers])
        return [row[0] for row in cur.fetchall()]


def follows(*, follower_id: int, followee_id: int) -> bool:
    return Follow.objects.filter(follower_id=follower_id, followee_id=followee_id).exists()


def followee_ids(*, follower_id: int) -> list[int]:
    """Everyone the user follows."""
    return list(
        Follow.objects.filter(follower_id=follower_id).values_list("followee_id", flat=True)
    )


def follow_page(*, user_id: int, direction: str, before_id: int | None, limit: int) -> list[Follow]:
    """Followers (direction='followers') or followees of a user, newest follow first, keyset on
    the follow id; each row carries the other user and their counters in the same query."""
    if direction == "followers":
        qs = Follow.objects.filter(followee_id=user_id).select_related("follower__stats")
    else:
        qs = Follow.objects.filter(follower_id=user_id).select_related("followee__stats")
    if before_id is not None:
        qs = qs.filter(id__lt=before_id)
    return list(qs.order_by("-id")[:limit])


def block_between(a: int, b: int) -> int | None:
    """Who blocked whom between two users: the blocker's id (``a`` first when both did), or
    None."""
    blockers = set(
        Block.objects.filter(blocker_id__in=(a, b), blocked_id__in=(a, b)).values_list(
            "blocker_id", flat=True
        )
    )
    return a if a in blockers else b if b in blockers else None


def is_blocked_by(*, user_id: int | None, blocker_id: int) -> bool:
    """Whether ``blocker_id`` blocked ``user_id`` (an anonymous caller never is)."""
    if user_id is None or user_id == blocker_id:
        return False
    return Block.objects.filter(blocker_id=blocker_id, blocked_id=user_id).exists()


def hidden_author_ids(*, user_id: int) -> list[int]:
    """Authors whose activities the user does not see: whom they muted or blocked, and who
    blocked them. One query."""
    muted = Mute.objects.filter(muter_id=user_id).values_list("muted_id", flat=True)
    blocked = Block.objects.filter(blocker_id=user_id).values_list("blocked_id", flat=True)
    blockers = Block.objects.filter(blocked_id=user_id).values_list("blocker_id", flat=True)
    return sorted(set(muted.union(blocked, blockers)))


def relation_page(
    *, user_id: int, kind: str, before_id: int | None, limit: int
) -> list[Block] | list[Mute]:
    """The user's blocks (kind='blocks') or mutes, newest first, keyset on the row id, each with
    the other user in the same query."""
    below = {"id__lt": before_id} if before_id is not None else {}
    if kind == "blocks":
        blocks = Block.objects.filter(blocker_id=user_id, **below).select_related("blocked")
        return list(blocks.order_by("-id")[:limit])
    mutes = Mute.objects.filter(muter_id=user_id, **below).select_related("muted")
    return list(mutes.order_by("-id")[:limit])


def blocked_either_way(*, user_id: int, others: Iterable[int]) -> set[int]:
    """Of ``others``, those the user blocked or who blocked the user."""
    others = list(others)
    if not others:
        return set()
    blocked = Block.objects.filter(blocker_id=user_id, blocked_id__in=others).values_list(
        "blocked_id", flat=True
    )
    blockers = Block.objects.filter(blocked_id=user_id, blocker_id__in=others).values_list(
        "blocker_id", flat=True
    )
    return set(blocked) | set(blockers)


def muters_of(*, actor_id: int, user_ids: Iterable[int]) -> set[int]:
    """Of ``user_ids``, those who muted the actor."""
    return set(
        Mute.objects.filter(muted_id=actor_id, muter_id__in=list(user_ids)).values_list(
            "muter_id", flat=True
        )
    )
