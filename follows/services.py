"""Follow writes: the Follow row and both counters change in one transaction (the counters by
follows.receivers, so the admin, the shell and cascades keep them too). What a follow or an
unfollow means for feeds is announced by the same model signals (feeds.receivers)."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import F

from feedsite.errors import InvalidInput

from .models import Follow, UserStats

log = logging.getLogger("feeds.follows")


def follow_counters_bump(*, follower_id: int, followee_id: int, delta: int) -> None:
    """The follower's following_count and the followee's followers_count, by ``delta``, in the
    caller's transaction. Rows are locked in id order so opposite follows of the same two users
    cannot deadlock. An unfollow never creates a row (in a deleted user's cascade, theirs may
    be gone already)."""
    for uid in sorted((follower_id, followee_id)):
        if delta > 0:
            UserStats.objects.get_or_create(user_id=uid)
        field = "following_count" if uid == follower_id else "followers_count"
        UserStats.objects.filter(user_id=uid).update(**{field: F(field) + delta})


def follow_create(*, follower_id: int, followee_id: int) -> tuple[Follow, bool]:
    """Follow; returns (follow, created). Following twice is not an error."""
    if follower_id == followee_id:
        raise InvalidInput("you cannot follow yourself", field="followee")
    try:
        with transaction.atomic():
            follow = Follow.objects.create(follower_id=follower_id, followee_id=followee_id)
    except IntegrityError:
        return Follow.objects.get(follower_id=follower_id, followee_id=followee_id), False
    return follow, True


def follow_delete(*, follower_id: int, followee_id: int) -> bool:
    """Unfollow; returns whether a follow existed."""
    with transaction.atomic():
        follow = (
            Follow.objects.select_for_update()
            .filter(follower_id=follower_id, followee_id=followee_id)
            .first()
        )
        if follow is None:
            return False
        follow.delete()  # a model delete: its signals reach the counters and the feeds
    return True


def user_register(*, username: str, password: str):
    """A new, unprivileged user with its counters row."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    try:
        with transaction.atomic():
            user = user_model.objects.create_user(username=username, password=password)
            UserStats.objects.create(user=user)
    except IntegrityError:
        raise InvalidInput("a user with that username already exists", field="username") from None
    return user
