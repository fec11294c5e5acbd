"""Load + authorize in one place."""

from __future__ import annotations

from typing import Any

from feedsite.errors import Forbidden, NotFound, check_id

from .models import Activity


def _load(activity_id: int | str) -> Activity:
    try:
        wanted = int(activity_id)
    except ValueError:
        raise NotFound("activity not found") from None
    try:
        return Activity.objects.select_related("actor").get(id=check_id(wanted, "activity_id"))
    except Activity.DoesNotExist:
        raise NotFound("activity not found") from None


def access_activity_for_read(*, user: Any, activity_id: int | str) -> Activity:
    return _load(activity_id)


def access_activity_for_owner(*, user: Any, activity_id: int | str) -> Activity:
    """The actor or staff; anyone else gets 403 (the activity itself is public)."""
    activity = _load(activity_id)
    if activity.actor_id != user.pk and not user.is_staff:
        raise Forbidden("only the activity's actor or staff may do this")
    return activity
