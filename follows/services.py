"""Follow writes: the Follow row and both counters change in one transaction (the counters by
follows.receivers, so the admin, the shell and cascades keep them too). What a follow or an
unfollow means for feeds is announced by the same model signals (feeds.receivers)."""

from __future__ import annotations

import logging

from django.db import IntegrityError, connection, transaction
from django.db.models import F

from feedsite.errors import Forbidden, InvalidInput

from .models import Block, Follow, Mute, ObjectFollow, ObjectStats, UserStats
from .selectors import block_between

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


def _refuse_if_blocked(*, follower_id: int, followee_id: int) -> None:
    blocker = block_between(follower_id, followee_id)
    if blocker == follower_id:
        raise Forbidden("you blocked this user: unblock them before following")
    if blocker == followee_id:
        raise Forbidden("this user blocked you: you cannot follow them")


def follow_create(*, follower_id: int, followee_id: int) -> tuple[Follow, bool]:
    """Follow; returns (follow, created). Following twice is not an error; a block either way
    refuses it (403)."""
    if follower_id == followee_id:
        raise InvalidInput("you cannot follow yourself", field="followee")
    _refuse_if_blocked(follower_id=follower_id, followee_id=followee_id)
    try:
        with transaction.atomic():
            follow = Follow.objects.create(follower_id=follower_id, followee_id=followee_id)
            # The counters (follows.receivers) locked both users' stats rows, which a block
            # takes first too: a block that committed meanwhile is seen here, and refuses.
            _refuse_if_blocked(follower_id=follower_id, followee_id=followee_id)
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


def _lock_pair(a: int, b: int) -> None:
    """Lock both users' stats rows, in id order (as the follow counters do): a block and a
    follow of the same two users serialize."""
    for uid in sorted((a, b)):
        UserStats.objects.get_or_create(user_id=uid)
    list(UserStats.objects.select_for_update().filter(user_id__in=(a, b)).order_by("user_id"))


def block_create(*, blocker_id: int, blocked_id: int) -> tuple[Block, bool]:
    """Block; returns (block, created). Removes follows both ways in the same transaction
    (their model deletes reach the counters and purge the feeds after commit)."""
    if blocker_id == blocked_id:
        raise InvalidInput("you cannot block yourself", field="user_id")
    with transaction.atomic():
        _lock_pair(blocker_id, blocked_id)
        block, created = Block.objects.get_or_create(blocker_id=blocker_id, blocked_id=blocked_id)
        for follow in Follow.objects.filter(
            follower_id__in=(blocker_id, blocked_id), followee_id__in=(blocker_id, blocked_id)
        ):
            follow.delete()
    return block, created


def block_delete(*, blocker_id: int, blocked_id: int) -> bool:
    """Unblock; returns whether there was a block. Follows removed by the block stay removed."""
    with transaction.atomic():
        block = Block.objects.filter(blocker_id=blocker_id, blocked_id=blocked_id).first()
        if block is None:
            return False
        block.delete()
    return True


def mute_create(*, muter_id: int, muted_id: int) -> tuple[Mute, bool]:
    """Mute; returns (mute, created). The follow, if any, stays."""
    if muter_id == muted_id:
        raise InvalidInput("you cannot mute yourself", field="user_id")
    with transaction.atomic():
        return Mute.objects.get_or_create(muter_id=muter_id, muted_id=muted_id)


def mute_delete(*, muter_id: int, muted_id: int) -> bool:
    with transaction.atomic():
        mute = Mute.objects.filter(muter_id=muter_id, muted_id=muted_id).first()
        if mute is None:
            return False
        mute.delete()
    return True


# --- objects (``object_type:object_id``, what activities are about) ---------------------------
#
# As for people: the ObjectFollow row and the object's counter change in one transaction (the
# counter by follows.receivers, so the admin, the shell and a deleted user's cascade keep it
# too). What an object follow or unfollow means for feeds (backfill, purge) is announced by the
# same model signals: feeds.receivers listens to ObjectFollow's post_save / post_delete and acts
# on commit, exactly as it does for Follow. This app calls nothing of feeds.


def object_stats_bump(*, object_type: str, object_id: str, delta: int) -> None:
    """The object's followers_count, by ``delta``, in the caller's transaction. A follow
    upserts (one INSERT ... ON CONFLICT DO UPDATE: two first follows of an object cannot both
    insert, and the row lock it takes serializes every bump of that object until commit). An
    unfollow never creates a row. The count cannot go below 0 (a check constraint)."""
    if delta > 0:
        table = ObjectStats._meta.db_table
        sql = (
            f"INSERT INTO {table} (object_type, object_id, followers_count) "  # noqa: S608 - table name from model meta
            "VALUES (%s, %s, %s) ON CONFLICT (object_type, object_id) "
            f"DO UPDATE SET followers_count = {table}.followers_count + EXCLUDED.followers_count"
        )
        with connection.cursor() as cur:
            cur.execute(sql, [object_type, object_id, delta])
        return
    ObjectStats.objects.filter(object_type=object_type, object_id=object_id).update(
        followers_count=F("followers_count") + delta
    )


def object_follow_create(
    *, user_id: int, object_type: str, object_id: str
) -> tuple[ObjectFollow, bool]:
    """Follow an object; returns (follow, created). Following twice is not an error (the
    unique (user, type, id) constraint decides between concurrent twins). ``object_type`` and
    ``object_id`` are already valid (activities.serializers.object_type_field/object_id_field)."""
    key = {"user_id": user_id, "object_type": object_type, "object_id": object_id}
    for _ in range(3):
        try:
            with transaction.atomic():
                return ObjectFollow.objects.create(**key), True
        except IntegrityError:
            existing = ObjectFollow.objects.filter(**key).first()
            if existing is not None:
                return existing, False
            # The twin that won was unfollowed before we looked: try again.
    raise InvalidInput("the follow kept changing under this request: retry", field="id")


def object_follow_delete(*, user_id: int, object_type: str, object_id: str) -> bool:
    """Unfollow an object; returns whether a follow existed. The row is locked first, so two
    concurrent unfollows delete (and count) it once."""
    with transaction.atomic():
        row = (
            ObjectFollow.objects.select_for_update()
            .filter(user_id=user_id, object_type=object_type, object_id=object_id)
            .first()
        )
        if row is None:
            return False
        row.delete()  # a model delete: its signals reach the counter (and, later, the feeds)
    return True


def user_register(*, username: str, password: str, email: str = ""):
    """A new, unprivileged user with its counters row."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    try:
        with transaction.atomic():
            user = user_model.objects.create_user(username=username, password=password, email=email)
            UserStats.objects.create(user=user)
    except IntegrityError:
        raise InvalidInput("a user with that username already exists", field="username") from None
    return user
