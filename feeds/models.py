from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
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
        default=5000,
        validators=[MinValueValidator(1)],
        help_text=(
            "Followers written per fan-out batch task, in virtual-shard order: one round trip "
            "of one Lua call per shard in the batch."
        ),
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

    notification_window_seconds = models.PositiveIntegerField(
        default=86400,
        validators=[MinValueValidator(1)],
        help_text="Same verb + object inside one bucket of this many seconds form one "
        "notification item; following someone again inside it notifies nothing new.",
    )
    notification_max_length = models.PositiveIntegerField(
        default=200,
        validators=[MinValueValidator(1)],
        help_text="Notifications kept per user; older ones are trimmed.",
    )

    class Meta:
        verbose_name = verbose_name_plural = "feed settings"

    def __str__(self) -> str:
        return "Feed settings"


class FanoutJob(models.Model):
    class Kind(models.TextChoices):
        PUBLISH = "publish"
        REMOVE = "remove"
        NOTIFY = "notify"  # into the notification feeds of the users an activity names

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
    # Whether the activity goes to home feeds (a follow's notification does not): a remove job
    # of one that does not has no follower to visit.
    home = models.BooleanField(default=True)
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


class Notification(models.Model):
    """An activity in a user's notification feed: the truth the Redis notification feed is
    built from. Written with the activity (same transaction), delivered by a `notify` fan-out
    job; ``read`` mirrors what the user marked."""

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    activity_id = models.BigIntegerField()  # no FK: the remove job needs the rows after a delete
    actor_id = models.BigIntegerField()
    read = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["recipient", "activity_id"], name="notification_once")
        ]
        indexes = [
            models.Index(fields=["recipient", "-activity_id"], name="notification_recipient"),
            models.Index(fields=["activity_id", "recipient"], name="notification_activity"),
        ]

    def __str__(self) -> str:
        return f"{self.activity_id} -> {self.recipient_id}"


class NotificationSettings(models.Model):
    """How a user hears of notifications while offline, and how far they have seen."""

    class Email(models.TextChoices):
        OFF = "off"
        INSTANT = "instant"  # one email per notification
        DIGEST = "digest"  # at most one email per digest_minutes

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="notification_settings",
    )
    email = models.CharField(max_length=8, choices=Email.choices, default=Email.DIGEST)
    digest_minutes = models.PositiveIntegerField(
        default=60, validators=[MinValueValidator(5), MaxValueValidator(1440)]
    )
    seen_upto = models.BigIntegerField(default=0)  # every notification at or below it is seen
    last_digest_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "notification settings"

    def __str__(self) -> str:
        return f"{self.user_id}: {self.email}"


class NotificationEmail(models.Model):
    """The outbox: one row per notification owed by email (the recipient was offline). A row is
    sent once: `instant` rows by their own task, `digest` rows together by the digest sweep;
    rows still pending after a mail-server outage are retried, never dropped."""

    class State(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_emails"
    )
    activity_id = models.BigIntegerField()
    mode = models.CharField(max_length=8, choices=NotificationSettings.Email.choices)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["recipient", "activity_id"], name="notification_email_once"
            )
        ]
        indexes = [models.Index(fields=["state", "recipient"], name="notification_email_state")]

    def __str__(self) -> str:
        return f"{self.activity_id} -> {self.recipient_id} ({self.state})"
