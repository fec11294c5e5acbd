from __future__ import annotations

from django.conf import settings
from django.db import models

from activities.models import Activity
from feedsite.shards import ORDER_SHIFT, VSHARDS


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


class _UserPair(models.Model):
    """One user's stance towards another (a block, a mute): one row per pair, never oneself."""

    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class Block(_UserPair):
    """The blocker and the blocked stop seeing each other: no follows either way, no activities
    in feeds or notifications, the blocker's activities answer the blocked with 403."""

    blocker = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="blocks_made"
    )
    blocked = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="blocks_received"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["blocker", "blocked"], name="block_unique_pair"),
            models.CheckConstraint(
                condition=~models.Q(blocker=models.F("blocked")), name="block_not_self"
            ),
        ]
        indexes = [models.Index(fields=["blocked", "blocker"], name="block_blocked_blocker")]

    def __str__(self) -> str:
        return f"{self.blocker_id} blocks {self.blocked_id}"


class Mute(_UserPair):
    """The muter stops seeing the muted user's activities (feed and notifications, at read
    time), without unfollowing."""

    muter = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mutes_made"
    )
    muted = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mutes_received"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["muter", "muted"], name="mute_unique_pair"),
            models.CheckConstraint(
                condition=~models.Q(muter=models.F("muted")), name="mute_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.muter_id} mutes {self.muted_id}"


# An object is named as an activity names what it is about: the same columns, the same lengths
# (the API's rules are activities.serializers.object_type_field / object_id_field).
OBJECT_TYPE_MAX_LENGTH: int = Activity._meta.get_field("object_type").max_length  # type: ignore[assignment]
OBJECT_ID_MAX_LENGTH: int = Activity._meta.get_field("object_id").max_length  # type: ignore[assignment]

# A follower's shard order (feedsite.shards.shard_order) as an index expression on user_id:
# the same expression, parsed, as follows.selectors' SQL, so PostgreSQL matches the two.
_USER_SHARD_ORDER = (models.F("user_id") % VSHARDS) * ORDER_SHIFT + models.F("user_id")


class ObjectFollow(models.Model):
    """A user follows an object (``object_type:object_id``, what activities are about: a
    project, a channel, a topic). Ids may hold "/" ("owner/repo"): the API takes them as
    query parameters or body fields, never as path segments."""

    # No index of its own: the unique constraint and the (user, -id) index both lead with it.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="object_follows",
        db_index=False,
    )
    object_type = models.CharField(max_length=OBJECT_TYPE_MAX_LENGTH)
    object_id = models.CharField(max_length=OBJECT_ID_MAX_LENGTH)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Also the index of "does the user follow these objects" (feed reads, unfollow).
            models.UniqueConstraint(
                fields=["user", "object_type", "object_id"], name="objectfollow_unique"
            ),
        ]
        indexes = [
            # GET /api/me/objects/: a user's followed objects, newest first (keyset on id).
            models.Index(fields=["user", "-id"], name="objectfollow_user_id_desc"),
            # Fan-out: an object's followers in shard order, by ranges (follows.selectors
            # object_follower_ids_in_range and object_follower_id_boundaries).
            models.Index(
                models.F("object_type"),
                models.F("object_id"),
                _USER_SHARD_ORDER,
                name="objectfollow_object_shard",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} -> {self.object_type}:{self.object_id}"


class ObjectStats(models.Model):
    """An object's follower count, updated with the ObjectFollow row in one transaction (by
    follows.receivers, so the admin, the shell and cascades keep it too): no COUNT(*) reads.
    A row appears with the object's first follow and stays (at 0) when the last one leaves."""

    object_type = models.CharField(max_length=OBJECT_TYPE_MAX_LENGTH)
    object_id = models.CharField(max_length=OBJECT_ID_MAX_LENGTH)
    followers_count = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "object"
        verbose_name_plural = "followed objects"
        constraints = [
            models.UniqueConstraint(fields=["object_type", "object_id"], name="objectstats_unique"),
            models.CheckConstraint(
                condition=models.Q(followers_count__gte=0),
                name="objectstats_followers_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.object_type}:{self.object_id}: {self.followers_count} followers"
