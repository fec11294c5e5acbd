"""Cache invalidation only: a deleted token or a changed user must not stay authenticated."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver
from rest_framework.authtoken.models import Token

from .auth import invalidate_token, invalidate_user_tokens


@receiver(post_delete, sender=Token, dispatch_uid="token_cache_drop")
def drop_token(sender, instance: Token, **kwargs) -> None:
    invalidate_token(instance.key)


@receiver(post_save, sender=get_user_model(), dispatch_uid="user_token_cache_drop")
@receiver(pre_delete, sender=get_user_model(), dispatch_uid="user_token_cache_drop_delete")
def drop_user_tokens(sender, instance, **kwargs) -> None:
    invalidate_user_tokens(instance.pk)
