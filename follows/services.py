"""Follow writes: the Follow row and both counters change in one transaction."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import F

from feedsite.errors import InvalidInput

from .models import Follow, UserStats

log = logging.getLogger("feeds.follows")


def _bump_counters(*, follower_id: int, followee_id: int, delta: int) -> None:
    # Lock rows in id order so opposite follows of the same two users cannot deadlock.
    for uid in sorted((follower_id, followee_id)):
        UserStats.objects.get_or_create(user_id=uid)
        field = "following_count" if uid == follower_id else "followers_count"
        UserStats.objects.filter(user_id=uid).update(**{field: F(field) + delta})


def follow_create(*, follower_id: int, followee_id: int) -> tuple[Follow, bool]:
    """Follow; returns (follow, created). Following twice is not an error."""
    if follower_id == followee_id:
        raise InvalidInput("you cannot follow yourself", field="followee")
    from feeds.services import feed_follow_backfill

    try:
        with transaction.atomic():
            follow = Follow.objects.create(follower_id=follower_id, followee_id=followee_id)
            _bump_counters(follower_id=follower_id, followee_id=followee_id, delta=1)
    except IntegrityError:
        return Follow.objects.get(follower_id=follower_id, followee_id=followee_id), False
    transaction.on_commit(
        lambda: feed_follow_backfill(follower_id=follower_id, followee_id=followee_id),
        robust=True,
    )
    return follow, True


def follow_delete(*, follower_id: int, followee_id: int) -> bool:
    """Unfollow; returns whether a follow existed. The followee's items leave the feed after commit."""
    from feeds.services import feed_follow_purge

    with transaction.atomic():
        deleted, _ = Follow.objects.filter(
            follower_id=follower_id, followee_id=followee_id
        ).delete()
        if deleted:
            _bump_counters(follower_id=follower_id, followee_id=followee_id, delta=-1)
    if deleted:
        transaction.on_commit(
            lambda: feed_follow_purge(follower_id=follower_id, followee_id=followee_id),
            robust=True,
        )
    return bool(deleted)


def user_register(*, username: str, password: str):
    """A new, unprivileged user with its counters row."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    try:
        with transaction.atomic():
            user = user_model.objects.create_user(username=username, password=password)
            UserStats.objects.create(user=user)
        from feeds.rebuild import users_rebuild

        users_rebuild(user_ids=[user.pk])  # a new user is an active reader: an (empty) feed
    except IntegrityError:
        raise InvalidInput("a user with that username already exists", field="username") from None
    return user
