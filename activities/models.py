from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from .ids import make_id, truncate_to_ms

verb_validator = RegexValidator(
    r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$",
    "verb must be a lowercase slug: letters, digits, '-' or '_' (for example 'starred').",
)


class Activity(models.Model):
    """Actor did verb to object (optionally in target) at time. The id orders like time."""

    id = models.BigIntegerField(primary_key=True, editable=False)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="activities"
    )
    verb = models.CharField(max_length=32, validators=[verb_validator])
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=255)
    object_title = models.CharField(max_length=255, blank=True, default="")
    target_type = models.CharField(max_length=64, blank=True, default="")
    target_id = models.CharField(max_length=255, blank=True, default="")
    target_title = models.CharField(max_length=255, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    time = models.DateTimeField(default=timezone.now)
    # NULL, not "": the unique (actor, foreign_id) constraint must ignore activities without one.
    foreign_id = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    created_at = models.DateTimeField(auto_now_add=True)
    # When the body (object_title, target_title, metadata) last changed: NULL until edited.
    # Strictly increasing per activity (activities.services.activity_edit), at microsecond
    # precision: the body cache keeps whichever copy carries the newest (feeds.store.bodies).
    edited_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Users the activity names for their notification feeds (the publisher's `notify`, checked
    # and filtered by the feeds when it is saved), and whether it goes to followers' home
    # feeds at all (a follow's notification does not).
    notify = models.JSONField(default=list, blank=True)
    home = models.BooleanField(default=True)

    class Meta:
        verbose_name_plural = "activities"
        constraints = [
            models.UniqueConstraint(
                fields=["actor", "foreign_id"],
                condition=models.Q(foreign_id__isnull=False),
                name="activity_unique_foreign_id_per_actor",
            )
        ]
        indexes = [
            models.Index(fields=["actor", "-id"], name="activity_actor_id_desc"),
            # An object's activities, newest first (GET /api/objects/activities/, and object
            # timelines): what is about it, and what happened in it (as the target); follows.
            # selectors.object_activity_page merges the two index scans by id.
            models.Index(
                fields=["object_type", "object_id", "-id"], name="activity_object_id_desc"
            ),
            models.Index(
                fields=["target_type", "target_id", "-id"], name="activity_target_id_desc"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.actor_id} {self.verb} {self.object_type}:{self.object_id}"

    def save(self, *args, **kwargs) -> None:
        # Admin and ORM saves get the same time-ordered id as the API (see ids.py).
        if self.id is None:
            self.time = truncate_to_ms(self.time)
            self.id = make_id(self.time)
            kwargs["force_insert"] = True
        super().save(*args, **kwargs)
