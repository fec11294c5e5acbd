"""The follow counters hear every follow and unfollow, whichever path made it (the API, the
admin, the shell, the cascade of a deleted user), in the same transaction: the receivers hand
off to follows.services, which holds the logic."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from . import services
from .models import Follow, ObjectFollow


@receiver(post_save, sender=Follow, dispatch_uid="follows.counters_on_save")
def follow_saved(sender, instance: Follow, created: bool, raw: bool = False, **kwargs) -> None:
    if created and not raw:
        services.follow_counters_bump(
            follower_id=instance.follower_id, followee_id=instance.followee_id, delta=1
        )


@receiver(post_delete, sender=Follow, dispatch_uid="follows.counters_on_delete")
def follow_deleted(sender, instance: Follow, **kwargs) -> None:
    services.follow_counters_bump(
        follower_id=instance.follower_id, followee_id=instance.followee_id, delta=-1
    )


@receiver(post_save, sender=ObjectFollow, dispatch_uid="follows.object_counter_on_save")
def object_follow_saved(
    sender, instance: ObjectFollow, created: bool, raw: bool = False, **kwargs
) -> None:
    if created and not raw:
        services.object_stats_bump(
            object_type=instance.object_type, object_id=instance.object_id, delta=1
        )


@receiver(post_delete, sender=ObjectFollow, dispatch_uid="follows.object_counter_on_delete")
def object_follow_deleted(sender, instance: ObjectFollow, **kwargs) -> None:
    services.object_stats_bump(
        object_type=instance.object_type, object_id=instance.object_id, delta=-1
    )
