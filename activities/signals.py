"""Signal receivers only register an after-commit enqueue; the logic lives in feeds.fanout."""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import Activity


@receiver(post_save, sender=Activity, dispatch_uid="activity_enqueue_fanout")
def enqueue_fanout(sender, instance: Activity, created: bool, **kwargs) -> None:
    if created:
        from feeds.tasks import fanout_publish_task

        aid = instance.id
        transaction.on_commit(lambda: fanout_publish_task.delay(aid), robust=True)


@receiver(post_delete, sender=Activity, dispatch_uid="activity_enqueue_removal")
def enqueue_removal(sender, instance: Activity, **kwargs) -> None:
    from feeds.tasks import fanout_remove_task

    aid, actor_id = instance.id, instance.actor_id
    transaction.on_commit(lambda: fanout_remove_task.delay(aid, actor_id), robust=True)
