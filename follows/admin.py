from django.contrib import admin

from .models import Follow, ObjectFollow, ObjectStats, UserStats


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


@admin.register(ObjectFollow)
class ObjectFollowAdmin(admin.ModelAdmin):
    """A user's follow of an object. Adding and deleting here is what the API does (the model
    signals keep the object's counter, and will reach the feeds); a follow is not edited in
    place (that would skip both): delete it and add another."""

    list_display = ("id", "user", "object_type", "object_id", "created_at")
    # The type exactly, the id by its start ("=", "^": no substring scan of the whole id), and
    # "type:id" for one object exactly (object_search).
    search_fields = ("=object_type", "^object_id", "user__username")
    raw_id_fields = ("user",)
    list_select_related = ("user",)
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return ("user", "object_type", "object_id", "created_at") if obj is not None else ()

    def get_search_results(self, request, queryset, search_term):
        return object_search(super(), request, queryset, search_term)


@admin.register(ObjectStats)
class ObjectStatsAdmin(admin.ModelAdmin):
    """Followed objects and their follower counts. Read only: the counter moves with the
    follows (add or delete those), never by hand."""

    list_display = ("object_type", "object_id", "followers_count")
    search_fields = ("=object_type", "^object_id")
    ordering = ("-followers_count",)
    show_full_result_count = False
    readonly_fields = ("object_type", "object_id", "followers_count")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_search_results(self, request, queryset, search_term):
        return object_search(super(), request, queryset, search_term)


def object_search(parent, request, queryset, search_term: str):
    """The admin's search, plus "type:id" naming one object exactly (the id may hold ":" or
    "/"; the type holds what comes before the first ":")."""
    object_type, colon, object_id = search_term.strip().partition(":")
    if colon and object_type and object_id and " " not in object_type:
        return queryset.filter(object_type=object_type, object_id=object_id), False
    return parent.get_search_results(request, queryset, search_term)
