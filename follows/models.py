from __future__ import annotations

from django.conf import settings
from django.db import models


class Follow(models.Model):
    follower = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="following_set"
    )
    followee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="follower_set"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["follower", "followee"], name="follow_unique_pair"),
            models.CheckConstraint(
                condition=~models.Q(follower=models.F("followee")), name="follow_not_self"
            ),
        ]
        # Fan-out reads followers of one author by keyset over follower_id: this index serves it.
        indexes = [models.Index(fields=["followee", "follower"], name="follow_followee_follower")]

    def __str__(self) -> str:
        return f"{self.follower_id} -> {self.followee_id}"


class UserStats(models.Model):
    """Denormalised counters, updated with the Follow row in one transaction (no COUNT(*) reads)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="stats"
    )
    followers_count = models.PositiveBigIntegerField(default=0)
    following_count = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "user stats"

    def __str__(self) -> str:
        return f"{self.user_id}: {self.followers_count} followers"
