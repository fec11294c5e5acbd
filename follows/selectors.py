"""Reads over follows: keyset ranges of follower ids, never OFFSET over the whole set."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connection
from django.db.models import Exists, OuterRef, Q
from django.db.models.expressions import RawSQL

from activities.models import Activity
from feedsite.shards import ORDER_SHIFT, SHARD_ORDER_SQL, VSHARDS

from .models import Block, Follow, Mute, ObjectFollow, ObjectStats, UserStats

# In a query with parameters: '%' doubled.
_ORDER = SHARD_ORDER_SQL.replace("%", "%%")
# The same order over an object's followers (ObjectFollow.user_id): the expression of the
# index objectfollow_object_shard, which PostgreSQL matches to this text.
_OBJ_ORDER = f"((user_id %% {VSHARDS}) * {ORDER_SHIFT} + user_id)"


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


# --- objects (``object_type:object_id``) ------------------------------------------------------
#
# An object's followers are read as a followee's are: in shard order (feedsite.shards), by
# boundaries then (lo, hi] ranges (batch_ranges applies unchanged), so a fan-out batch of an
# object's followers is a run of whole or partial shards, like an author's.

ObjectKey = tuple[str, str]  # (object_type, object_id)


def object_follower_id_boundaries(
    *, object_type: str, object_id: str, batch_size: int
) -> list[int]:
    """Every ``batch_size``-th follower of the object in shard order, as its order key,
    ascending (as follower_id_boundaries): one pass over the index objectfollow_object_shard."""
    table = ObjectFollow._meta.db_table
    sql = (
        f"SELECT k FROM (SELECT {_OBJ_ORDER} AS k, "  # noqa: S608 - table name from model meta
        f"ROW_NUMBER() OVER (ORDER BY {_OBJ_ORDER}) AS rn FROM {table} "
        "WHERE object_type = %s AND object_id = %s) AS numbered WHERE rn %% %s = 0 ORDER BY k"
    )
    with connection.cursor() as cur:
        cur.execute(sql, [object_type, object_id, batch_size])
        return [row[0] for row in cur.fetchall()]


def _range_where(order: str, lo: int | None, hi: int | None) -> tuple[list[str], list[int]]:
    where, params = [], []
    if lo is not None:
        where.append(f"{order} > %s")
        params.append(lo)
    if hi is not None:
        where.append(f"{order} <= %s")
        params.append(hi)
    return where, params


def object_follower_ids_in_range(
    *, object_type: str, object_id: str, lo: int | None, hi: int | None
) -> list[int]:
    """The object's followers whose shard order lies in (lo, hi] (None: open), in that order
    (as follower_ids_in_range): a batch of fan-out."""
    table = ObjectFollow._meta.db_table
    bounds, params = _range_where(_OBJ_ORDER, lo, hi)
    where = " AND ".join(["object_type = %s", "object_id = %s", *bounds])
    sql = f"SELECT user_id FROM {table} WHERE {where} ORDER BY {_OBJ_ORDER}"  # noqa: S608
    with connection.cursor() as cur:
        cur.execute(sql, [object_type, object_id, *params])
        return [row[0] for row in cur.fetchall()]


def object_follower_count(*, object_type: str, object_id: str) -> int:
    """The object's followers (its counter row; 0 for an object nobody follows)."""
    return (
        ObjectStats.objects.filter(object_type=object_type, object_id=object_id)
        .values_list("followers_count", flat=True)
        .first()
        or 0
    )


def _audience_branches(
    author_id: int | None, objects: Iterable[ObjectKey], lo: int | None, hi: int | None
) -> tuple[list[str], list]:
    """One SELECT (user id, shard order) per source, each bounded to (lo, hi] on its own index."""
    branches: list[str] = []
    params: list = []
    if author_id is not None:
        bounds, extra = _range_where(_ORDER, lo, hi)
        where = " AND ".join(["followee_id = %s", *bounds])
        branches.append(
            f"SELECT follower_id AS u, {_ORDER} AS k FROM {Follow._meta.db_table} WHERE {where}"  # noqa: S608
        )
        params += [author_id, *extra]
    for object_type, object_id in dict.fromkeys(objects):  # (distinct, in order)
        bounds, extra = _range_where(_OBJ_ORDER, lo, hi)
        where = " AND ".join(["object_type = %s", "object_id = %s", *bounds])
        branches.append(
            f"SELECT user_id AS u, {_OBJ_ORDER} AS k FROM {ObjectFollow._meta.db_table} "  # noqa: S608
            f"WHERE {where}"
        )
        params += [object_type, object_id, *extra]
    return branches, params


def audience_id_boundaries(
    *, author_id: int | None, objects: Iterable[ObjectKey], batch_size: int
) -> list[int]:
    """Boundaries (as follower_id_boundaries) over the distinct users who follow the author
    or any of ``objects``: one fan-out job over every source of an activity, each recipient
    in exactly one batch (shard order is one-to-one with user ids, so UNION dedupes users)."""
    branches, params = _audience_branches(author_id, objects, None, None)
    if not branches:
        return []
    union = " UNION ".join(branches)
    sql = (
        "SELECT k FROM (SELECT k, ROW_NUMBER() OVER (ORDER BY k) AS rn FROM "  # noqa: S608
        f"({union}) AS everyone) AS numbered WHERE rn %% %s = 0 ORDER BY k"
    )
    with connection.cursor() as cur:
        cur.execute(sql, [*params, batch_size])
        return [row[0] for row in cur.fetchall()]


def audience_ids_in_range(
    *, author_id: int | None, objects: Iterable[ObjectKey], lo: int | None, hi: int | None
) -> list[int]:
    """The distinct users who follow the author or any of ``objects``, with shard order in
    (lo, hi], in that order: one batch of a fan-out over every source, each user once."""
    branches, params = _audience_branches(author_id, objects, lo, hi)
    if not branches:
        return []
    sql = f"SELECT u FROM ({' UNION '.join(branches)}) AS everyone ORDER BY k"  # noqa: S608
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return [row[0] for row in cur.fetchall()]


def audience_count(*, author_id: int | None, objects: Iterable[ObjectKey]) -> int:
    """How many distinct users follow the author or any of ``objects`` (a job's recipients)."""
    branches, params = _audience_branches(author_id, objects, None, None)
    if not branches:
        return 0
    sql = f"SELECT COUNT(*) FROM ({' UNION '.join(branches)}) AS everyone"  # noqa: S608
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


def object_follows(*, user_id: int, object_type: str, object_id: str) -> bool:
    return ObjectFollow.objects.filter(
        user_id=user_id, object_type=object_type, object_id=object_id
    ).exists()


def followed_objects(*, user_id: int) -> list[ObjectKey]:
    """Every object the user follows (by the unique (user, type, id) index)."""
    return list(
        ObjectFollow.objects.filter(user_id=user_id).values_list("object_type", "object_id")
    )


def followed_among(*, user_id: int, objects: Iterable[ObjectKey]) -> set[ObjectKey]:
    """Of ``objects``, those the user follows (an unfollow keeps what another object of the
    same activity still brings). One query."""
    wanted = list(dict.fromkeys(objects))
    if not wanted:
        return set()
    match = Q()
    for object_type, object_id in wanted:
        match |= Q(object_type=object_type, object_id=object_id)
    rows = ObjectFollow.objects.filter(match, user_id=user_id)
    return set(rows.values_list("object_type", "object_id"))


def followed_objects_with_min_followers(*, user_id: int, min_followers: int) -> list[ObjectKey]:
    """Objects the user follows that are at or above the celebrity threshold (pulled at read
    time, as followee_ids_with_min_followers): the user's follows by the unique index, each
    object's counter by its unique index."""
    sql = (
        f"SELECT f.object_type, f.object_id FROM {ObjectFollow._meta.db_table} f "  # noqa: S608
        f"JOIN {ObjectStats._meta.db_table} s ON s.object_type = f.object_type "
        "AND s.object_id = f.object_id WHERE f.user_id = %s AND s.followers_count >= %s"
    )
    with connection.cursor() as cur:
        cur.execute(sql, [user_id, min_followers])
        return [(row[0], row[1]) for row in cur.fetchall()]


def objects_with_followers_in(*, lo: int, hi: int) -> list[ObjectKey]:
    """Objects with at least ``lo`` and fewer than ``hi`` followers (the threshold moved)."""
    rows = ObjectStats.objects.filter(followers_count__gte=lo, followers_count__lt=hi)
    return list(rows.values_list("object_type", "object_id"))


def object_follow_page(*, user_id: int, before_id: int | None, limit: int) -> list[ObjectFollow]:
    """The objects the user follows, newest follow first, keyset on the follow id (index
    objectfollow_user_id_desc)."""
    qs = ObjectFollow.objects.filter(user_id=user_id)
    if before_id is not None:
        qs = qs.filter(id__lt=before_id)
    return list(qs.order_by("-id")[:limit])


NO_ID_ABOVE = 2**63 - 1  # every activity id lies below it (a bigint)


def _object_activities_branch(role: str, hide_blocked: bool) -> str:
    """The newest ids whose ``role`` ("object" or "target") is the object, below an id: one
    scan of activity_object_id_desc / activity_target_id_desc that stops after the limit."""
    where = f"{role}_type = %s AND {role}_id = %s AND home = %s AND id < %s"
    if hide_blocked:
        block = Block._meta.db_table
        where += (
            f" AND actor_id NOT IN (SELECT blocked_id FROM {block} WHERE blocker_id = %s"  # noqa: S608
            f" UNION ALL SELECT blocker_id FROM {block} WHERE blocked_id = %s)"
        )
    return (
        f"SELECT id FROM (SELECT id FROM {Activity._meta.db_table} WHERE {where} "  # noqa: S608 - constants
        f"ORDER BY id DESC LIMIT %s) AS as_{role}"
    )


def _object_activity_ids_sql(
    object_type: str, object_id: str, before_id: int | None, limit: int, viewer_id: int | None
) -> tuple[str, list]:
    before = NO_ID_ABOVE if before_id is None else before_id
    hide = viewer_id is not None
    branch: list = [object_type, object_id, True, before]
    branch += [viewer_id, viewer_id, limit] if hide else [limit]
    sql = (
        f"SELECT id FROM ({_object_activities_branch('object', hide)} UNION "  # noqa: S608
        f"{_object_activities_branch('target', hide)}) AS merged ORDER BY id DESC LIMIT %s"
    )
    return sql, [*branch, *branch, limit]


def object_activity_ids(
    *,
    object_type: str,
    object_id: str,
    before_id: int | None,
    limit: int,
    viewer_id: int | None = None,
) -> list[int]:
    """Ids of the live home activities whose object or target is this object, below
    ``before_id`` (None: from the newest), newest first, at most ``limit``. With
    ``viewer_id``, authors the viewer blocked or who blocked the viewer are left out (mutes
    are the feed's business, not this list's). Two index scans, each stopping after ``limit``
    rows, merged by id: an activity about the object in both roles counts once. Also the
    selector of an object's recent activities (timelines, a new follower's backfill)."""
    sql, params = _object_activity_ids_sql(object_type, object_id, before_id, limit, viewer_id)
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return [row[0] for row in cur.fetchall()]


def object_activity_page(
    *, object_type: str, object_id: str, viewer_id: int, before_id: int | None, limit: int
) -> list[Activity]:
    """GET /api/objects/activities/: the rows of object_activity_ids for the viewer, with
    their actors (activities.selectors.activity_to_dict), newest first. One query."""
    sql, params = _object_activity_ids_sql(object_type, object_id, before_id, limit, viewer_id)
    ids = RawSQL(sql, params)  # noqa: S611 - constants and bound parameters only
    rows = Activity.objects.filter(id__in=ids).select_related("actor")
    return list(rows.order_by("-id"))


def object_follower_counts(*, objects: Iterable[ObjectKey]) -> dict[ObjectKey, int]:
    """Each object's follower counter (absent: nobody follows it). One query."""
    wanted = list(dict.fromkeys(objects))
    if not wanted:
        return {}
    match = Q()
    for object_type, object_id in wanted:
        match |= Q(object_type=object_type, object_id=object_id)
    rows = ObjectStats.objects.filter(match).values_list(
        "object_type", "object_id", "followers_count"
    )
    return {(t, i): n for t, i, n in rows}


def followed_objects_since(*, user_id: int) -> dict[ObjectKey, object]:
    """Every object the user follows, with when the follow began (a datetime)."""
    rows = ObjectFollow.objects.filter(user_id=user_id)
    return {(t, i): at for t, i, at in rows.values_list("object_type", "object_id", "created_at")}


def _followed_object_branch(role: str, *, below: bool, since: bool, from_follow: bool) -> str:
    """The newest live home activities whose ``role`` ("object" or "target") is an object the
    user follows, per followed object by its (role type, role id, -id) index: a lateral scan
    that stops after the limit."""
    activity, follow = Activity._meta.db_table, ObjectFollow._meta.db_table
    stats = ObjectStats._meta.db_table
    where = [
        f"a.{role}_type = f.object_type",
        f"a.{role}_id = f.object_id",
        "a.home",
        "a.id >= %(min)s",
    ]
    if since:
        where.append("a.time >= %(since)s")
    if from_follow:
        where.append("a.time >= f.created_at")
    outer = "f.user_id = %(user)s"
    if below:
        outer += (
            f" AND EXISTS (SELECT 1 FROM {stats} s WHERE s.object_type = f.object_type"  # noqa: S608
            " AND s.object_id = f.object_id AND s.followers_count < %(threshold)s)"
        )
    return (
        f"SELECT n.id, n.actor_id FROM {follow} f CROSS JOIN LATERAL ("  # noqa: S608 - constants
        f"SELECT a.id, a.actor_id FROM {activity} a WHERE {' AND '.join(where)} "
        f"ORDER BY a.{role}_type, a.{role}_id, a.id DESC LIMIT %(limit)s) n WHERE {outer}"
    )


def followed_object_activity_entries(
    *,
    user_id: int,
    limit: int,
    below_threshold: int | None = None,
    since: object | None = None,
    from_follow: bool = False,
    min_id: int = 0,
) -> list[tuple[int, int]]:
    """(id, actor id) of the newest ``limit`` live home activities whose object or target is an
    object the user follows, newest first, each once: with ``below_threshold``, only objects
    with fewer followers (push objects); ``since``: posted from then on; ``from_follow``: posted
    after that object's follow began; ids at or above ``min_id``. One query (two lateral scans
    per followed object on activity_object_id_desc / activity_target_id_desc)."""
    flags = {"below": below_threshold is not None, "since": since is not None}
    flags["from_follow"] = from_follow
    branches = [_followed_object_branch(role, **flags) for role in ("object", "target")]
    sql = (
        f"SELECT id, actor_id FROM ({' UNION '.join(branches)}) u ORDER BY id DESC LIMIT %(limit)s"  # noqa: S608
    )
    params: dict[str, Any] = {
        "user": user_id,
        "limit": limit,
        "threshold": below_threshold,
        "since": since,
        "min": min_id,
    }
    if connection.vendor != "postgresql":
        return _followed_object_entries_orm({**params, "from_follow": from_follow})
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return [(row[0], row[1]) for row in cur.fetchall()]


def _followed_object_entries_orm(params: dict[str, Any]) -> list[tuple[int, int]]:
    """followed_object_activity_entries through the ORM (any database)."""
    match = Q(pk__in=[])
    follows = followed_objects_since(user_id=params["user"])
    counts = object_follower_counts(objects=follows)
    for (object_type, object_id), began in follows.items():
        if (
            params["threshold"] is not None
            and counts.get((object_type, object_id), 0) >= (params["threshold"])
        ):
            continue
        about = Q(object_type=object_type, object_id=object_id)
        about |= Q(target_type=object_type, target_id=object_id)
        if params["from_follow"]:
            about &= Q(time__gte=began)
        match |= about
    qs = Activity.objects.filter(match, home=True, id__gte=params["min"])
    if params["since"] is not None:
        qs = qs.filter(time__gte=params["since"])
    return list(qs.order_by("-id").values_list("id", "actor_id")[: params["limit"]])


def about(object_type: str, object_id: str, target_type: str, target_id: str) -> list[ObjectKey]:
    """The objects an activity is about: its object, then its target when it has one (and it
    is another object). Pure."""
    objects = [(object_type, object_id)]
    if target_type and (target_type, target_id) != objects[0]:
        objects.append((target_type, target_id))
    return objects


def activity_sources_from(
    *, min_id: int, actor_id: int | None = None, obj: ObjectKey | None = None
) -> dict[int, tuple[int, list[ObjectKey]]]:
    """Each live activity (home or not) at or above ``min_id`` by the actor, or whose object or
    target is ``obj``, with its actor and the objects it is about (``about``), by id: what an
    unfollow's purge may find in a feed. One query, by index on (actor, -id) or on the two
    (type, id, -id) indexes."""
    if obj is not None:
        match = Q(object_type=obj[0], object_id=obj[1]) | Q(target_type=obj[0], target_id=obj[1])
    else:
        match = Q(actor_id=actor_id)
    rows = Activity.objects.filter(match, id__gte=min_id).values_list(
        "id", "actor_id", "object_type", "object_id", "target_type", "target_id"
    )
    return {aid: (actor, about(ot, oi, tt, ti)) for aid, actor, ot, oi, tt, ti in rows}


def followee_ids_among(*, follower_id: int, user_ids: Iterable[int]) -> set[int]:
    """Of ``user_ids``, those the follower follows. One query."""
    ids = list(set(user_ids))
    if not ids:
        return set()
    rows = Follow.objects.filter(follower_id=follower_id, followee_id__in=ids)
    return set(rows.values_list("followee_id", flat=True))


def followed_objects_below(*, user_id: int, threshold: int) -> dict[ObjectKey, object]:
    """The objects the user follows that have fewer than ``threshold`` followers (push objects),
    with when each follow began. One query."""
    at_or_above = ObjectStats.objects.filter(
        object_type=OuterRef("object_type"),
        object_id=OuterRef("object_id"),
        followers_count__gte=threshold,
    )
    rows = ObjectFollow.objects.filter(user_id=user_id).exclude(Exists(at_or_above))
    return {(t, i): at for t, i, at in rows.values_list("object_type", "object_id", "created_at")}


def pull_sources(*, user_id: int, min_followers: int) -> tuple[list[int], list[ObjectKey]]:
    """The authors and the objects the user follows that are at or above the celebrity
    threshold (followee_ids_with_min_followers and followed_objects_with_min_followers in one
    query: a cold feed read asks for both)."""
    sql = (
        f"SELECT f.followee_id, NULL, NULL FROM {Follow._meta.db_table} f "  # noqa: S608 - table names from model meta
        f"JOIN {UserStats._meta.db_table} s ON s.user_id = f.followee_id "
        "WHERE f.follower_id = %s AND s.followers_count >= %s "
        f"UNION ALL SELECT NULL, f.object_type, f.object_id FROM {ObjectFollow._meta.db_table} f "
        f"JOIN {ObjectStats._meta.db_table} s ON s.object_type = f.object_type "
        "AND s.object_id = f.object_id WHERE f.user_id = %s AND s.followers_count >= %s"
    )
    with connection.cursor() as cur:
        cur.execute(sql, [user_id, min_followers, user_id, min_followers])
        rows = cur.fetchall()
    authors = [r[0] for r in rows if r[0] is not None]
    return authors, [(r[1], r[2]) for r in rows if r[0] is None]


def audience_plan(
    *, author_id: int | None, objects: Iterable[ObjectKey], batch_size: int
) -> tuple[list[int], int]:
    """audience_id_boundaries and audience_count in one pass over the sources' indexes (a
    fan-out coordinator needs both): (boundaries, distinct users)."""
    branches, params = _audience_branches(author_id, objects, None, None)
    if not branches:
        return [], 0
    union = " UNION ".join(branches)
    sql = (
        "SELECT k, rn, total FROM (SELECT k, ROW_NUMBER() OVER (ORDER BY k) AS rn, "  # noqa: S608
        f"COUNT(*) OVER () AS total FROM ({union}) AS everyone) AS numbered "
        "WHERE rn %% %s = 0 OR rn = total ORDER BY k"
    )
    with connection.cursor() as cur:
        cur.execute(sql, [*params, batch_size])
        rows = cur.fetchall()
    return [k for k, rn, _ in rows if rn % batch_size == 0], rows[-1][2] if rows else 0
