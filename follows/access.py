from __future__ import annotations

from django.contrib.auth import get_user_model

from feedsite.errors import NotFound, check_id

User = get_user_model()


def access_user_for_read(*, user_id: int):
    """Profiles are public; a missing (or inactive) user is 404."""
    check_id(user_id, "user_id")
    user = User.objects.filter(pk=user_id, is_active=True).select_related("stats").first()
    if user is None:
        raise NotFound("user not found")
    return user
