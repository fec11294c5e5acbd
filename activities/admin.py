from django.contrib import admin

from .models import Activity


@admin.register(Activity)
class ActivityAdmin(admin.ModelAdmin):
    list_display = ("id", "actor", "verb", "object_type", "object_id", "time")
    list_filter = ("verb", "object_type")
    search_fields = ("actor__username", "object_id", "foreign_id")
    raw_id_fields = ("actor",)
    list_select_related = ("actor",)
    readonly_fields = ("id", "created_at")
    show_full_result_count = False
    date_hierarchy = "time"
