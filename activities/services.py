"""Activity writes. What they mean for feeds is announced by the model signals (feeds.receivers
writes the fan-out job in the same transaction, so a crash between commit and enqueue leaves a
visible pending job that the sweeper re-enqueues)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from feedsite.errors import InvalidInput, NotFound

from .ids import make_id, time_to_ms, truncate_to_ms
from .models import Activity

ID_ATTEMPTS = 5  # a random 10-bit tiebreak collides with p ~ 1/1024 per same-millisecond pair


def _check_time(moment: Any) -> Any:
    moment = truncate_to_ms(moment)
    limit = timezone.now() + timedelta(seconds=settings.FEEDSITE_FUTURE_SKEW_SECONDS)
    if moment > limit:
        raise InvalidInput(
            "time may not be more than "
            f"{settings.FEEDSITE_FUTURE_SKEW_SECONDS} seconds in the future",
            field="time",
        )
    try:
        time_to_ms(moment)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="time") from exc
    return moment


def activity_publish(*, actor_id: int, data: dict[str, Any]) -> tuple[Activity, bool]:
    """Create an activity; returns (activity, created).

    The same actor posting the same ``foreign_id`` again gets the existing activity back."""
    foreign_id = data.get("foreign_id") or None
    if foreign_id is not None:
        existing = Activity.objects.filter(actor_id=actor_id, foreign_id=foreign_id).first()
        if existing is not None:
            return existing, False
    moment = _check_time(data.get("time") or timezone.now())
    fields = {k: v for k, v in data.items() if k not in {"time", "foreign_id"}}
    for _ in range(ID_ATTEMPTS):
        activity = Activity(
            id=make_id(moment), actor_id=actor_id, time=moment, foreign_id=foreign_id, **fields
        )
        try:
            with transaction.atomic():  # the save's receivers write in this transaction
                activity.save(force_insert=True)
        except IntegrityError:
            if foreign_id is not None:
                existing = Activity.objects.filter(actor_id=actor_id, foreign_id=foreign_id).first()
                if existing is not None:  # a concurrent POST with the same foreign_id won
                    return existing, False
            continue  # id collision in the same millisecond: draw another tiebreak
        return activity, True
    raise InvalidInput("could not allocate an activity id; retry the request")


EDITABLE_FIELDS = ("object_title", "target_title", "metadata")
EDIT_STEP = timedelta(microseconds=1)


def next_edited_at(*, now: datetime, previous: datetime | None) -> datetime:
    """An edit's edited_at: now, but always after the previous edit's (clocks of two servers
    may disagree), so the body cache can keep the newest copy by it. Pure."""
    if previous is not None and now <= previous:
        return previous + EDIT_STEP
    return now


def activity_edit(*, activity_id: int, changes: dict[str, Any]) -> Activity:
    """Change an activity's editable fields (``changes``: validated, a subset of
    EDITABLE_FIELDS; metadata is replaced whole) under a lock on its row, and stamp edited_at.
    No change asked: the activity as it is. A concurrent delete wins: NotFound, never a
    resurrection (its row is gone, and the feeds' body cache keeps the delete's tombstone).

    The save announces itself (post_save): once this commits, the feeds replace the cached
    body and tell open streams; feeds hold ids, so nothing is fanned out again."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise InvalidInput(f"not editable: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        activity = Activity.objects.select_for_update().filter(id=activity_id).first()
        if activity is None:
            raise NotFound("activity not found")
        if not changes:
            return activity
        for name, value in changes.items():
            setattr(activity, name, value)
        activity.edited_at = next_edited_at(now=timezone.now(), previous=activity.edited_at)
        activity.save(update_fields=[*changes, "edited_at"])
    return activity


def activity_delete(*, activity: Activity) -> None:
    """Delete (the delete's receivers take it out of every feed, in the same transaction)."""
    with transaction.atomic():
        activity.delete()
