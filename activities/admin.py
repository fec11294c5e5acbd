from typing import Any

from django import forms
from django.contrib import admin

from .models import Activity
from .serializers import metadata_problem
from .services import EDITABLE_FIELDS, activity_edit


class ActivityAdminForm(forms.ModelForm):
    """Metadata validated as a publish's (activities.serializers.metadata_problem)."""

    class Meta:
        model = Activity
        fields = (
            "actor",
            "verb",
            "object_type",
            "object_id",
            "object_title",
            "target_type",
            "target_id",
            "target_title",
            "metadata",
            "time",
            "foreign_id",
            "notify",
            "home",
        )

    def clean_metadata(self) -> Any:
        value = self.cleaned_data.get("metadata")
        if value is None:  # left empty
            return {}
        problem = metadata_problem(value)
        if problem:
            raise forms.ValidationError(problem)
        return value


@admin.register(Activity)
class ActivityAdmin(admin.ModelAdmin):
    form = ActivityAdminForm
    list_display = ("id", "actor", "verb", "object_type", "object_id", "time", "edited_at")
    list_filter = ("verb", "object_type")
    search_fields = ("actor__username", "object_id", "foreign_id")
    raw_id_fields = ("actor",)
    list_select_related = ("actor",)
    readonly_fields = ("id", "created_at", "edited_at")
    show_full_result_count = False
    date_hierarchy = "time"

    def get_readonly_fields(self, request, obj=None) -> tuple[str, ...]:
        """A saved activity is edited as through the API: only EDITABLE_FIELDS change."""
        if obj is None:
            return self.readonly_fields
        names = [f.name for f in Activity._meta.fields if f.name not in EDITABLE_FIELDS]
        return tuple(dict.fromkeys([*self.readonly_fields, *names]))

    def save_model(self, request, obj: Activity, form, change: bool) -> None:
        """A change is an edit (activities.services.activity_edit: row lock, edited_at, and on
        commit the feeds' body cache and open streams), never a plain save."""
        if not change:
            super().save_model(request, obj, form, change)
            return
        changes = {f: form.cleaned_data[f] for f in EDITABLE_FIELDS if f in form.changed_data}
        edited = activity_edit(activity_id=obj.pk, changes=changes)
        obj.edited_at = edited.edited_at
