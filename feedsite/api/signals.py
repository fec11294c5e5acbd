"""Cache invalidation only: a deleted or changed token, or a changed user, must not stay
authenticated from the token cache. Each turns the entries into tombstones now and again after
commit (feedsite.api.auth.invalidate_digests): a request that read the row before the commit
cannot cache it back."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver
from knox.models import AuthToken

from .auth import invalidate_digests, invalidate_user_tokens


@receiver(post_delete, sender=AuthToken, dispatch_uid="token_cache_drop")
def drop_token(sender, instance: AuthToken, **kwargs) -> None:
    invalidate_digests([instance.digest])


@receiver(post_save, sender=AuthToken, dispatch_uid="token_cache_drop_changed")
def token_changed(sender, instance: AuthToken, created: bool = False, **kwargs) -> None:
    """Its expiry or user edited (the admin): the entry says otherwise. A new token has none."""
    if not created:
        invalidate_digests([instance.digest])


@receiver(post_save, sender=get_user_model(), dispatch_uid="user_token_cache_drop")
@receiver(pre_delete, sender=get_user_model(), dispatch_uid="user_token_cache_drop_delete")
def drop_user_tokens(sender, instance, created: bool = False, update_fields=None, **kwargs) -> None:
    """Deactivated, demoted, renamed or deleted: every token's entry. A new user has none, and
    a session login's last_login update changes nothing an entry holds (tombstoned, every
    token of the user would cost a query per request for a minute)."""
    if created or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return
    invalidate_user_tokens(instance.pk)
