from django.contrib import admin, messages
from django.utils.html import format_html

from . import fanout
from .models import FanoutDeadLetter, FanoutJob, FeedSettings, NotificationEmail
from .services import settings_changed


@admin.register(FeedSettings)
class FeedSettingsAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "celebrity_threshold",
        "feed_max_length",
        "fanout_batch_size",
        "follow_backfill_count",
        "aggregation_window_seconds",
        "inactive_after_days",
        "notification_window_seconds",
        "notification_max_length",
    )

    def has_add_permission(self, request) -> bool:
        return not FeedSettings.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        old = (
            FeedSettings.objects.filter(pk=obj.pk)
            .values_list("celebrity_threshold", flat=True)
            .first()
        )
        super().save_model(request, obj, form, change)
        settings_changed(
            old_threshold=old or obj.celebrity_threshold, new_threshold=obj.celebrity_threshold
        )


@admin.register(FanoutJob)
class FanoutJobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "activity_id",
        "actor_id",
        "kind",
        "strategy",
        "state",
        "progress",
        "recipients",
        "skipped",
        "duration",
        "created_at",
    )
    list_filter = ("state", "kind", "strategy")
    search_fields = ("=activity_id", "=actor_id")
    show_full_result_count = False
    exclude = ("boundaries",)
    readonly_fields = [f.name for f in FanoutJob._meta.fields if f.name != "boundaries"]

    def has_add_permission(self, request) -> bool:
        return False  # jobs come from publishing, deleting and rebuilding, never by hand

    @admin.display(description="batches")
    def progress(self, job: FanoutJob) -> str:
        """A bar: batches done (green) and failed (red) of the total, with the figures."""
        total = job.batches_total or 0
        done = round(100 * job.batches_done / total) if total else 0
        failed = round(100 * job.batches_failed / total) if total else 0
        return format_html(
            '<div class="fanout-progress" title="{} done, {} failed of {}" style="display:flex;'
            "width:10em;height:0.8em;background:#ddd;border-radius:3px;overflow:hidden;"
            'vertical-align:middle">'
            '<span style="width:{}%;background:#2e7d32"></span>'
            '<span style="width:{}%;background:#c62828"></span></div> {}/{}{}',
            job.batches_done,
            job.batches_failed,
            total,
            done,
            failed,
            job.batches_done,
            total,
            format_html(' <b style="color:#c62828">{} failed</b>', job.batches_failed)
            if job.batches_failed
            else "",
        )

    @admin.display(description="seconds")
    def duration(self, job: FanoutJob) -> str:
        if job.started_at and job.finished_at:
            return f"{(job.finished_at - job.started_at).total_seconds():.2f}"
        return "-"


@admin.register(FanoutDeadLetter)
class FanoutDeadLetterAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "job",
        "batch_no",
        "follower_lo",
        "follower_hi",
        "error",
        "created_at",
        "replayed_at",
    )
    list_filter = (("replayed_at", admin.EmptyFieldListFilter),)
    raw_id_fields = ("job",)
    show_full_result_count = False
    actions = ["replay"]

    @admin.action(description="Replay the selected dead letters now")
    def replay(self, request, queryset) -> None:
        ids = queryset.filter(replayed_at__isnull=True).values_list("id", flat=True)
        done, failures = fanout.dead_letters_replay(list(ids))
        for dl_id, error in failures:
            self.message_user(request, f"dead letter {dl_id}: {error}", messages.ERROR)
        self.message_user(request, f"replayed {done}, failed {len(failures)}")


@admin.register(NotificationEmail)
class NotificationEmailAdmin(admin.ModelAdmin):
    """The outbox: what offline users are owed by email, and what went out."""

    list_display = ("id", "recipient", "activity_id", "mode", "state", "created_at", "sent_at")
    list_filter = ("state", "mode")
    search_fields = ("=recipient__username", "=activity_id")
    list_select_related = ("recipient",)
    show_full_result_count = False
    readonly_fields = ("recipient", "activity_id", "mode", "state", "created_at", "sent_at")

    def has_add_permission(self, request) -> bool:
        return False
