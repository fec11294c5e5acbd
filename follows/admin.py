from django.contrib import admin

from .models import Follow, UserStats


@admin.register(Follow)
class FollowAdmin(admin.ModelAdmin):
    """Admin edits go through the ORM: counters are kept by follows.services, so prefer the API
    for bulk changes; `manage.py backfill` rebuilds feeds after manual edits."""

    list_display = ("id", "follower", "followee", "created_at")
    search_fields = ("follower__username", "followee__username")
    raw_id_fields = ("follower", "followee")
    list_select_related = ("follower", "followee")
    show_full_result_count = False


@admin.register(UserStats)
class UserStatsAdmin(admin.ModelAdmin):
    list_display = ("user", "followers_count", "following_count")
    search_fields = ("user__username",)
    raw_id_fields = ("user",)
    list_select_related = ("user",)
    ordering = ("-followers_count",)
    show_full_result_count = False
