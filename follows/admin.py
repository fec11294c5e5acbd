from django.contrib import admin

from .models import Follow, UserStats


@admin.register(Follow)
class FollowAdmin(admin.ModelAdmin):
    """Adding and deleting here is what the API does (the model signals keep the counters and
    the feeds). A follow is not edited in place (that would skip both): delete it and add
    another."""

    list_display = ("id", "follower", "followee", "created_at")
    search_fields = ("follower__username", "followee__username")
    raw_id_fields = ("follower", "followee")
    list_select_related = ("follower", "followee")
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return ("follower", "followee", "created_at") if obj is not None else ()


@admin.register(UserStats)
class UserStatsAdmin(admin.ModelAdmin):
    list_display = ("user", "followers_count", "following_count")
    search_fields = ("user__username",)
    raw_id_fields = ("user",)
    list_select_related = ("user",)
    ordering = ("-followers_count",)
    show_full_result_count = False
