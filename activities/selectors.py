"""Activity reads and the one body format shared by the API and the Redis body cache."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .models import Activity

BODY_FIELDS = (
    "verb",
    "object_type",
    "object_id",
    "object_title",
    "target_type",
    "target_id",
    "target_title",
    "metadata",
    "foreign_id",
)


def format_time(activity: Activity) -> str:
    return activity.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_edited_at(moment: datetime | None) -> str | None:
    """``edited_at`` as the body carries it: UTC with microseconds and a Z
    ("2026-12-02T17:30:00.123456Z"; PostgreSQL's to_char 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'
    makes the same text), or None. One fixed width, so two of them compare as strings in the
    order of time (the body cache's compare-and-set relies on it). Pure."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def activity_to_dict(activity: Activity) -> dict[str, Any]:
    """The public JSON of an activity (needs ``actor`` loaded: use select_related)."""
    body: dict[str, Any] = {
        "id": str(activity.id),
        "actor": {"id": activity.actor_id, "username": activity.actor.username},
    }
    for field in BODY_FIELDS:
        body[field] = getattr(activity, field)
    body["time"] = format_time(activity)
    # Not in BODY_FIELDS: feeds.selectors builds the same JSON in SQL from those plain columns.
    body["edited_at"] = format_edited_at(activity.edited_at)
    return body


def encode_body(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def activities_by_ids(ids: Sequence[int]) -> dict[int, Activity]:
    """Bulk load: one query for any number of ids."""
    return {a.id: a for a in Activity.objects.filter(id__in=ids).select_related("actor")}


def activity_page(*, actor_id: int, before_id: int | None, limit: int) -> list[Activity]:
    """An author's activities, newest first, keyset on id (index activity_actor_id_desc)."""
    qs = (
        Activity.objects.filter(actor_id=actor_id, home=True)
        .select_related("actor")
        .order_by("-id")
    )
    if before_id is not None:
        qs = qs.filter(id__lt=before_id)
    return list(qs[:limit])


def recent_activity_ids(*, actor_id: int, limit: int, since: datetime | None = None) -> list[int]:
    """The newest ``limit`` ids of an author (at or after ``since``), newest first: the one
    selector of an author's recent activities (backfill, timelines, repush). Activities that
    go to no home feed (a follow's notification) are not among them."""
    qs = Activity.objects.filter(actor_id=actor_id, home=True)
    if since is not None:
        qs = qs.filter(time__gte=since)
    return list(qs.order_by("-id").values_list("id", flat=True)[:limit])


def activity_ids_from(*, actor_id: int, min_id: int) -> list[int]:
    """Every id of an author at or above ``min_id``, newest first (by index on (actor, id))."""
    qs = Activity.objects.filter(actor_id=actor_id, id__gte=min_id)
    return list(qs.order_by("-id").values_list("id", flat=True))
