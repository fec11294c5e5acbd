from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import serializers

from feedsite.api.parsers import json_problem

from .models import Activity, verb_validator

MAX_METADATA_BYTES = 4096
MAX_SAFE_INTEGER = 2**53  # beyond it a JavaScript client silently loses precision


def unsafe_number(value: Any, path: str = "metadata") -> str | None:
    """Where metadata holds an integer beyond +-2^53 or a non-finite float, or None. Pure."""
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, f"{where}.{k}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(node))
        elif isinstance(node, int) and not isinstance(node, bool):
            if not -MAX_SAFE_INTEGER <= node <= MAX_SAFE_INTEGER:
                return f"{where}: integers must lie within +-2^53"
        elif isinstance(node, float):
            if not math.isfinite(node):
                return f"{where}: numbers must be finite"
            if node.is_integer() and abs(node) > MAX_SAFE_INTEGER:  # (orjson: past 2^64)
                return f"{where}: integers must lie within +-2^53"
    return None


def metadata_problem(value: Any) -> str | None:
    """What is wrong with an activity's metadata (a publish's, an edit's, the admin's), or
    None: an object, within the nesting depth, numbers a JavaScript client reads exactly, at
    most MAX_METADATA_BYTES as JSON. Pure."""
    if not isinstance(value, dict):
        return "metadata must be a JSON object"
    problem = json_problem(value, settings.FEEDSITE_JSON_MAX_DEPTH) or unsafe_number(value)
    if problem:
        return problem
    try:
        size = len(json.dumps(value, separators=(",", ":"), allow_nan=False).encode())
    except ValueError:
        return "metadata: numbers must be finite"
    if size > MAX_METADATA_BYTES:
        return f"metadata must be at most {MAX_METADATA_BYTES} bytes as JSON (got {size})"
    return None


def checked_metadata(value: Any) -> dict:
    """``value`` when it is valid metadata (metadata_problem), else a ValidationError."""
    problem = metadata_problem(value)
    if problem:
        raise serializers.ValidationError(problem)
    return value


# What an activity is about: ``object_type:object_id`` (and ``target_type:target_id``). One set of
# rules for every place that names an object (a publish, an object follow), from the model's
# columns: a type of 1-64 characters, an id of 1-255 (ids may hold "/", e.g. "owner/repo"), with
# DRF's CharField rules (surrounding whitespace trimmed, no NUL or lone surrogate).
OBJECT_TYPE_MAX_LENGTH: int = Activity._meta.get_field("object_type").max_length  # type: ignore[assignment]
OBJECT_ID_MAX_LENGTH: int = Activity._meta.get_field("object_id").max_length  # type: ignore[assignment]


def object_type_field(**kwargs: Any) -> serializers.CharField:
    """An object's (or a target's) type, as an activity names it."""
    kwargs.setdefault("min_length", 1)
    return serializers.CharField(max_length=OBJECT_TYPE_MAX_LENGTH, **kwargs)


def object_id_field(**kwargs: Any) -> serializers.CharField:
    """An object's (or a target's) id, as an activity names it."""
    kwargs.setdefault("min_length", 1)
    return serializers.CharField(max_length=OBJECT_ID_MAX_LENGTH, **kwargs)


MAX_NOTIFY = 100


class StrictIntegerField(serializers.IntegerField):
    """An integer given as a JSON number: no strings, booleans or floats."""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class ActivityInSerializer(serializers.Serializer):
    """What a client may set. actor, id and created_at are the server's; unknown keys are ignored."""

    verb = serializers.CharField(min_length=1, max_length=32, validators=[verb_validator])
    object_type = object_type_field()
    object_id = object_id_field()
    object_title = serializers.CharField(
        max_length=255, required=False, allow_blank=True, default=""
    )
    target_type = object_type_field(min_length=None, required=False, allow_blank=True, default="")
    target_id = object_id_field(min_length=None, required=False, allow_blank=True, default="")
    target_title = serializers.CharField(
        max_length=255, required=False, allow_blank=True, default=""
    )
    metadata = serializers.DictField(required=False, default=dict)
    time = serializers.DateTimeField(required=False)
    foreign_id = serializers.CharField(
        min_length=1, max_length=255, required=False, allow_null=True
    )
    notify = serializers.ListField(
        child=StrictIntegerField(),  # ids that name no user (0, -5, 2**70) are ignored
        max_length=MAX_NOTIFY,
        required=False,
        default=list,
        help_text=f"user ids (at most {MAX_NOTIFY}) whose notification feeds get the activity; "
        "unknown users, the actor and blocks either way are ignored",
    )

    def validate_metadata(self, value: dict) -> dict:
        return checked_metadata(value)

    def validate(self, attrs: dict) -> dict:
        if bool(attrs.get("target_type")) != bool(attrs.get("target_id")):
            raise serializers.ValidationError(
                {"target_id": "target_type and target_id go together: give both or neither"}
            )
        return attrs


# Fields an edit may not touch: present at all in a PATCH, even unchanged, is a 400 naming them.
IMMUTABLE_FIELDS = (
    "verb",
    "object_type",
    "object_id",
    "target_type",
    "target_id",
    "foreign_id",
    "time",
    "notify",
    "id",
    "actor",
    "edited_at",
)


class ActivityEditSerializer(serializers.Serializer):
    """What an edit (PATCH) may change, validated as at publish (metadata replaced whole).
    verb, object_type, object_id, target_type, target_id, foreign_id, time, notify, id, actor
    and edited_at may not be present at all (a 400 naming each); other keys are ignored."""

    object_title = serializers.CharField(max_length=255, required=False, allow_blank=True)
    target_title = serializers.CharField(max_length=255, required=False, allow_blank=True)
    metadata = serializers.DictField(required=False)

    def to_internal_value(self, data: Any) -> dict:
        if isinstance(data, Mapping):
            fixed = [name for name in IMMUTABLE_FIELDS if name in data]
            if fixed:
                raise serializers.ValidationError(
                    {name: [f"{name} cannot be changed by an edit"] for name in fixed}
                )
        return super().to_internal_value(data)

    def validate_metadata(self, value: dict) -> dict:
        return checked_metadata(value)


class ActorSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class ActivityOutSerializer(serializers.Serializer):
    """Documents the body built by activities.selectors.activity_to_dict. Ids are strings so
    that clients treat them as opaque (they are 53-bit integers)."""

    id = serializers.CharField()
    actor = ActorSerializer()
    verb = serializers.CharField()
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    object_title = serializers.CharField()
    target_type = serializers.CharField()
    target_id = serializers.CharField()
    target_title = serializers.CharField()
    metadata = serializers.DictField()
    time = serializers.CharField()
    edited_at = serializers.CharField(
        allow_null=True,
        help_text="when the activity was last edited (UTC, microseconds), null until then",
    )
    foreign_id = serializers.CharField(allow_null=True)


class ActivityPageSerializer(serializers.Serializer):
    items = ActivityOutSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)
