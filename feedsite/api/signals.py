"""Cache invalidation only: a deleted token or a changed user must not stay authenticated."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver
from knox.models import AuthToken

from .auth import invalidate_digests, invalidate_user_tokens


@receiver(post_delete, sender=AuthToken, dispatch_uid="token_cache_drop")
def drop_token(sender, instance: AuthToken, **kwargs) -> None:
    invalidate_digests([instance.digest])


@receiver(post_save, sender=get_user_model(), dispatch_uid="user_token_cache_drop")
@receiver(pre_delete, sender=get_user_model(), dispatch_uid="user_token_cache_drop_delete")
def drop_user_tokens(sender, instance, **kwargs) -> None:
    invalidate_user_tokens(instance.pk)
