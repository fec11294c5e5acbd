"""How feeds hear what happened elsewhere: the model signals of activities, follows and users.

`activities/` and `follows/` know nothing of feeds; every save and delete (the API, the admin,
the shell, a cascade from a deleted user) announces itself through Django's `post_save` and
`post_delete`, and these receivers do the hand-off only: a fan-out job row written in the
caller's transaction and enqueued when it commits, or a feed change run after commit. The logic
lives in feeds.services. Bulk ORM calls (`bulk_create`, `QuerySet.update()`) send no model
signals and so bypass the feeds (README); the project's own code does not use them on these
models. Fixtures loaded with `loaddata` (``raw``) are left to `manage.py backfill`."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver

from activities.models import Activity
from follows.models import Block, Follow, Mute

from . import hydrate, services
from .followees import followees_changed


@receiver(post_save, sender=Activity, dispatch_uid="feeds.activity_saved")
def activity_saved(sender, instance: Activity, created: bool, raw: bool = False, **kwargs) -> None:
    if raw:
        return
    if created:
        services.activity_published(activity=instance)
    else:
        # An edit (activities.services.activity_edit; the admin's goes through it too): the
        # cached body is replaced on commit, before the edit answers. Not robust: an edit
        # whose body could not be written answers 503, not a 200 that later reads contradict.
        transaction.on_commit(lambda: hydrate.body_edited(activity=instance))


@receiver(post_delete, sender=Activity, dispatch_uid="feeds.activity_deleted")
def activity_deleted(sender, instance: Activity, **kwargs) -> None:
    services.activity_removed(activity=instance)
    # The tombstone on commit, synchronously: from the 204 on (or the admin's or the ORM's
    # commit) no read shows it, with every worker stopped too. After the remove job's enqueue
    # (registered above); not robust, as an edit: a 503 when Redis cannot take it, and the
    # remove job buries it again before it cleans the feeds.
    activity_id = instance.pk
    transaction.on_commit(lambda: hydrate.body_deleted(activity_ids=[activity_id]))


@receiver(post_save, sender=Follow, dispatch_uid="feeds.follow_saved")
def follow_saved(sender, instance: Follow, created: bool, raw: bool = False, **kwargs) -> None:
    if created and not raw:
        follower_id, followee_id = instance.follower_id, instance.followee_id
        # The followee's notification: written in this transaction (it rolls back with it).
        services.follow_notify(follower_id=follower_id, followee_id=followee_id)
        transaction.on_commit(
            lambda: followees_changed(
                follower_id=follower_id, followee_id=followee_id, following=True
            ),
            robust=True,
        )
        transaction.on_commit(
            lambda: services.feed_follow_backfill(follower_id=follower_id, followee_id=followee_id),
            robust=True,
        )


@receiver(post_delete, sender=Follow, dispatch_uid="feeds.follow_deleted")
def follow_deleted(sender, instance: Follow, **kwargs) -> None:
    follower_id, followee_id = instance.follower_id, instance.followee_id
    transaction.on_commit(
        lambda: followees_changed(
            follower_id=follower_id, followee_id=followee_id, following=False
        ),
        robust=True,
    )
    transaction.on_commit(
        lambda: services.feed_follow_purge(follower_id=follower_id, followee_id=followee_id),
        robust=True,
    )


@receiver(post_save, sender=Block, dispatch_uid="feeds.block_saved")
@receiver(post_delete, sender=Block, dispatch_uid="feeds.block_deleted")
def block_changed(sender, instance: Block, signal, raw: bool = False, **kwargs) -> None:
    if kwargs.get("created", True) and not raw:
        blocker_id, blocked_id, on = instance.blocker_id, instance.blocked_id, signal is post_save
        transaction.on_commit(
            lambda: services.block_changed(
                blocker_id=blocker_id, blocked_id=blocked_id, blocked=on
            ),
            robust=True,
        )


@receiver(post_save, sender=Mute, dispatch_uid="feeds.mute_saved")
@receiver(post_delete, sender=Mute, dispatch_uid="feeds.mute_deleted")
def mute_changed(sender, instance: Mute, signal, raw: bool = False, **kwargs) -> None:
    if kwargs.get("created", True) and not raw:
        muter_id, muted_id, muted = instance.muter_id, instance.muted_id, signal is post_save
        transaction.on_commit(
            lambda: services.mute_changed(muter_id=muter_id, muted_id=muted_id, muted=muted),
            robust=True,
        )


# A new user needs nothing: their feed is built on their first read (and fan-out skips a
# feed that does not exist yet, so nothing is written for users who never read).
@receiver(pre_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="feeds.user_deleting")
def user_deleting(sender, instance, **kwargs) -> None:
    # Before the cascade: afterwards no follow row says whose feeds hold this user's activities.
    services.author_forget_begin(author_id=instance.pk)


@receiver(post_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="feeds.user_deleted")
def user_deleted(sender, instance, **kwargs) -> None:
    user_id = instance.pk
    transaction.on_commit(lambda: services.feed_forget(user_id=user_id), robust=True)


# Objects (``object_type:object_id``) followed and unfollowed: the same hand-off as for a
# followee, on commit (the sender named lazily, as Django's model signals allow).
@receiver(post_save, sender="follows.ObjectFollow", dispatch_uid="feeds.object_follow_saved")
def object_follow_saved(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    if created and not raw:
        key = {
            "user_id": instance.user_id,
            "object_type": instance.object_type,
            "object_id": instance.object_id,
        }
        transaction.on_commit(lambda: services.object_follow_backfill(**key), robust=True)


@receiver(post_delete, sender="follows.ObjectFollow", dispatch_uid="feeds.object_follow_deleted")
def object_follow_deleted(sender, instance, **kwargs) -> None:
    key = {
        "user_id": instance.user_id,
        "object_type": instance.object_type,
        "object_id": instance.object_id,
    }
    transaction.on_commit(lambda: services.object_follow_purge(**key), robust=True)
