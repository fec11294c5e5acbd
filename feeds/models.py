from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models


class FeedSettings(models.Model):
    """One row (pk=1), edited in admin, read through a short cache (feeds/conf.py)."""

    celebrity_threshold = models.PositiveIntegerField(
        default=10_000,
        validators=[MinValueValidator(1)],
        help_text="Authors with at least this many followers are not fanned out on write; "
        "their followers pull their recent activities at read time.",
    )
    feed_max_length = models.PositiveIntegerField(
        default=500,
        validators=[MinValueValidator(1)],
        help_text="Entries kept per feed and per author timeline; older ones are trimmed.",
    )
    fanout_batch_size = models.PositiveIntegerField(
        default=1000,
        validators=[MinValueValidator(1)],
        help_text="Followers written per fan-out batch task (one pipelined Redis round trip).",
    )
    follow_backfill_count = models.PositiveIntegerField(
        default=20, help_text="Recent activities copied into a feed when its owner follows someone."
    )
    aggregation_window_seconds = models.PositiveIntegerField(
        default=3600,
        validators=[MinValueValidator(1)],
        help_text="Same verb + object inside one bucket of this many seconds form one feed item.",
    )
    inactive_after_days = models.PositiveIntegerField(
        default=30,
        help_text="Followers who have not read their feed for this many days are skipped at "
        "fan-out; their feed is rebuilt on their next read.",
    )

    class Meta:
        verbose_name = verbose_name_plural = "feed settings"

    def __str__(self) -> str:
        return "Feed settings"


class FanoutJob(models.Model):
    class Kind(models.TextChoices):
        PUBLISH = "publish"
        REMOVE = "remove"

    class Strategy(models.TextChoices):
        UNDECIDED = ""
        PUSH = "push"
        PULL = "pull"

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    # No FK to Activity: a remove job outlives the row it cleans up after.
    activity_id = models.BigIntegerField()
    # No FK to the actor either: deleting a user deletes their activities, and the remove jobs
    # of those run after the user row is gone.
    actor_id = models.BigIntegerField(db_index=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.PUBLISH)
    strategy = models.CharField(max_length=8, choices=Strategy.choices, blank=True, default="")
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    recipients = models.PositiveBigIntegerField(default=0)
    skipped = models.PositiveBigIntegerField(default=0)
    batches_total = models.PositiveIntegerField(default=0)
    batches_done = models.PositiveIntegerField(default=0)
    batches_failed = models.PositiveIntegerField(default=0)
    # Follower-id batch boundaries, fixed once by the coordinator so redelivery sees the same ranges.
    boundaries = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["activity_id", "kind"], name="fanoutjob_unique_kind")
        ]
        indexes = [models.Index(fields=["state", "updated_at"], name="fanoutjob_state_updated")]

    def __str__(self) -> str:
        return f"{self.kind} {self.activity_id} ({self.state})"


class FanoutBatch(models.Model):
    """A batch's first-time marker: the unique (job, batch_no) insert counts it exactly once."""

    class State(models.TextChoices):
        DONE = "done"
        FAILED = "failed"

    job = models.ForeignKey(FanoutJob, on_delete=models.CASCADE, related_name="batches")
    batch_no = models.PositiveIntegerField()
    state = models.CharField(max_length=8, choices=State.choices)
    delivered = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "batch_no"], name="fanoutbatch_unique_no")
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} batch {self.batch_no} {self.state}"


class FanoutDeadLetter(models.Model):
    """A batch that still failed after its retries; replay from admin or `replay_dead_letters`."""

    job = models.ForeignKey(FanoutJob, on_delete=models.CASCADE, related_name="dead_letters")
    batch_no = models.PositiveIntegerField()
    follower_lo = models.BigIntegerField(null=True, blank=True, help_text="exclusive")
    follower_hi = models.BigIntegerField(null=True, blank=True, help_text="inclusive")
    error = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["replayed_at", "created_at"], name="deadletter_open")]

    def __str__(self) -> str:
        return f"job {self.job_id} batch {self.batch_no}"
