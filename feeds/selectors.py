from __future__ import annotations

from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Q

from activities.ids import MAX_ID
from activities.models import Activity
from activities.selectors import BODY_FIELDS, activity_to_dict, encode_body
from follows.models import Block, Follow, Mute, ObjectFollow

from .models import FanoutJob


def fanout_status(*, activity_id: int) -> dict[str, Any]:
    """The publish job's progress; an activity saved but not yet picked up reads as pending."""
    job = FanoutJob.objects.filter(activity_id=activity_id, kind=FanoutJob.Kind.PUBLISH).first()
    if job is None:
        job = FanoutJob(activity_id=activity_id)
    return {
        "state": job.state,
        "strategy": job.strategy,
        "recipients": job.recipients,
        "skipped": job.skipped,
        "batches_total": job.batches_total,
        "batches_done": job.batches_done,
        "batches_failed": job.batches_failed,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def removals_pending(*, actor_id: int) -> list[int]:
    """Ids of the actor's deleted activities whose removal fan-out has not finished: gone from
    PostgreSQL, maybe still in feeds. An unfollow's purge takes these out too (the removal,
    when it runs, no longer sees the unfollower among the followers)."""
    return list(
        FanoutJob.objects.filter(actor_id=actor_id, kind=FanoutJob.Kind.REMOVE)
        .exclude(state=FanoutJob.State.DONE)
        .values_list("activity_id", flat=True)
    )


def object_removals_pending(*, obj: tuple[str, str]) -> list[int]:
    """Ids of deleted activities about the object (as object or target: their remove jobs name
    it) whose removal fan-out has not finished (as removals_pending for an author)."""
    rows = (
        FanoutJob.objects.filter(kind=FanoutJob.Kind.REMOVE)
        .exclude(state=FanoutJob.State.DONE)
        .values_list("activity_id", "boundaries")
    )
    wanted = list(obj)
    return [
        aid for aid, plan in rows if isinstance(plan, dict) and wanted in plan.get("objects", [])
    ]


class HomeRow(NamedTuple):
    """One activity of a home feed read from PostgreSQL: its id and its public JSON as text
    (activities.selectors.activity_to_dict, the body cache's format)."""

    id: int
    body: str


def _object_branch(role: str) -> str:
    """The newest live home activities below the bound whose ``role`` ("object" or "target") is
    an object the reader follows, per followed object by the (role type, role id, -id) index
    (activity_object_id_desc / activity_target_id_desc), authors the reader hides left out
    before the limit (whichever source brings them, they never show)."""
    activity, follow = Activity._meta.db_table, ObjectFollow._meta.db_table
    mute, block = Mute._meta.db_table, Block._meta.db_table
    return f"""
    SELECT n.id FROM {follow} o
    CROSS JOIN LATERAL (
        SELECT a.id FROM {activity} a
        WHERE a.{role}_type = o.object_type AND a.{role}_id = o.object_id
          AND a.home AND a.id < %(before)s AND a.id >= %(min)s
          AND NOT EXISTS (SELECT 1 FROM {mute} m
                          WHERE m.muter_id = %(user)s AND m.muted_id = a.actor_id)
          AND NOT EXISTS (SELECT 1 FROM {block} b
                          WHERE b.blocker_id = %(user)s AND b.blocked_id = a.actor_id)
          AND NOT EXISTS (SELECT 1 FROM {block} b
                          WHERE b.blocker_id = a.actor_id AND b.blocked_id = %(user)s)
        ORDER BY a.{role}_type, a.{role}_id, a.id DESC
        LIMIT %(limit)s
    ) n
    WHERE o.user_id = %(user)s"""  # noqa: S608 - table and column names from model meta


def _home_sql() -> str:
    """The query of home_activities_page (table names from model meta, body fields from
    BODY_FIELDS, so the JSON cannot drift from activity_to_dict)."""
    activity, follow = Activity._meta.db_table, Follow._meta.db_table
    mute, block = Mute._meta.db_table, Block._meta.db_table
    user = get_user_model()._meta.db_table
    fields = ", ".join(f"'{f}', a.{f}" for f in BODY_FIELDS)
    # The authors: the reader (authors see their own posts) and every followee the reader does
    # not hide (muted, blocked either way: three probes of unique indexes per followee).
    # Per author, the ids of the newest `limit` live home activities below the bound, by the
    # (actor, -id) index (activity_actor_id_desc): at most followees x limit index entries,
    # never an author's whole history. (The ORDER BY names the index's columns: ordered by id
    # alone, the planner may walk the primary key backwards filtering on the actor, which
    # reads every newer activity of everyone for an author who posts rarely.) Merged and cut to `limit` on ids alone (narrow rows: 10%
    # less time than sorting whole rows, 24 authors x 30); only those rows are read whole, join
    # the user table and become JSON (in PostgreSQL: no row objects or datetimes in Python).
    # The followed objects likewise (_object_branch, as object and as target), whenever the
    # follow began; UNION makes an activity reached through several sources one row.
    return f"""
SELECT a.id, json_build_object(
    'id', a.id::text,
    'actor', json_build_object('id', a.actor_id, 'username', u.username),
    {fields},
    'time', to_char(a.time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'edited_at', to_char(a.edited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
)::text
FROM (
    SELECT id FROM (
    SELECT n.id FROM (
        SELECT %(user)s::integer AS author_id
        UNION ALL
        SELECT f.followee_id FROM {follow} f
        WHERE f.follower_id = %(user)s
          AND NOT EXISTS (SELECT 1 FROM {mute} m
                          WHERE m.muter_id = %(user)s AND m.muted_id = f.followee_id)
          AND NOT EXISTS (SELECT 1 FROM {block} b
                          WHERE b.blocker_id = %(user)s AND b.blocked_id = f.followee_id)
          AND NOT EXISTS (SELECT 1 FROM {block} b
                          WHERE b.blocker_id = f.followee_id AND b.blocked_id = %(user)s)
    ) s
    CROSS JOIN LATERAL (
        SELECT a.id FROM {activity} a
        WHERE a.actor_id = s.author_id AND a.home AND a.id < %(before)s AND a.id >= %(min)s
        ORDER BY a.actor_id, a.id DESC
        LIMIT %(limit)s
    ) n
    UNION{_object_branch("object")}
    UNION{_object_branch("target")}
    ) sources
    ORDER BY id DESC
    LIMIT %(limit)s
) x
JOIN {activity} a ON a.id = x.id
JOIN {user} u ON u.id = a.actor_id
ORDER BY a.id DESC
"""  # noqa: S608 - table and column names from model meta and constants, values bound


_HOME_SQL: str | None = None


def home_activities_page(
    *, user_id: int, limit: int, before_id: int | None = None, min_id: int | None = None
) -> list[HomeRow]:
    """The reader's home feed in PostgreSQL (fan-out on read), newest first: at most ``limit``
    live home activities of the reader and the authors they follow and do not hide, and about
    the objects they follow (as object or target) by authors they do not hide, with ids
    below ``before_id`` and at or above ``min_id`` (None: unbounded), bodies in the same rows.
    On PostgreSQL one query, merged and limited in SQL (index range scans, see _home_sql);
    elsewhere (SQLite, the embedded default) the same rows through the ORM."""
    global _HOME_SQL
    before = MAX_ID + 1 if before_id is None else before_id
    low = 0 if min_id is None else min_id
    if limit <= 0 or before <= low:
        return []
    if connection.vendor != "postgresql":
        return _home_page_orm(user_id=user_id, limit=limit, before=before, low=low)
    if _HOME_SQL is None:
        _HOME_SQL = _home_sql()
    params = {"user": user_id, "before": before, "min": low, "limit": limit}
    with connection.cursor() as cur:
        cur.execute(_HOME_SQL, params)
        return [HomeRow(aid, body) for aid, body in cur.fetchall()]


def _home_page_orm(*, user_id: int, limit: int, before: int, low: int) -> list[HomeRow]:
    """home_activities_page through the ORM (any database): the same authors and rows."""
    hidden = Mute.objects.filter(muter_id=user_id).values("muted_id")
    blocked = Block.objects.filter(blocker_id=user_id).values("blocked_id")
    blockers = Block.objects.filter(blocked_id=user_id).values("blocker_id")
    followees = (
        Follow.objects.filter(follower_id=user_id)
        .exclude(followee_id__in=hidden)
        .exclude(followee_id__in=blocked)
        .exclude(followee_id__in=blockers)
        .values("followee_id")
    )
    about = Q(pk__in=[])
    for object_type, object_id in ObjectFollow.objects.filter(user_id=user_id).values_list(
        "object_type", "object_id"
    ):
        about |= Q(object_type=object_type, object_id=object_id)
        about |= Q(target_type=object_type, target_id=object_id)
    visible = ~Q(actor_id__in=hidden) & ~Q(actor_id__in=blocked) & ~Q(actor_id__in=blockers)
    rows = (
        Activity.objects.filter(
            Q(actor_id=user_id) | Q(actor_id__in=followees) | (about & visible),
            home=True,
            id__lt=before,
            id__gte=low,
        )
        .select_related("actor")
        .order_by("-id")[:limit]
    )
    return [HomeRow(a.id, encode_body(activity_to_dict(a)).decode()) for a in rows]
