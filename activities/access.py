"""Load + authorize in one place."""

from __future__ import annotations

from typing import Any

from feedsite.errors import Forbidden, NotFound, check_id
from follows.selectors import is_blocked_by

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


BLOCKED = "this user has blocked you"


def access_author_for_read(*, user: Any, author_id: int) -> None:
    """Activities are public, except to the users their author blocked (403)."""
    if is_blocked_by(user_id=getattr(user, "pk", None), blocker_id=author_id):
        raise Forbidden(BLOCKED)


def access_activity_for_read(*, user: Any, activity_id: int | str) -> Activity:
    activity = _load(activity_id)
    access_author_for_read(user=user, author_id=activity.actor_id)
    return activity


def access_activity_for_owner(*, user: Any, activity_id: int | str) -> Activity:
    """The actor or staff; anyone else gets 403 (the activity itself is public)."""
    activity = _load(activity_id)
    if activity.actor_id != user.pk and not user.is_staff:
        raise Forbidden("only the activity's actor or staff may do this")
    return activity
