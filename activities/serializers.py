from __future__ import annotations

import json

from rest_framework import serializers

from .models import verb_validator

MAX_METADATA_BYTES = 4096


class ActivityInSerializer(serializers.Serializer):
    """What a client may set. actor, id and created_at are the server's; unknown keys are ignored."""

    verb = serializers.CharField(min_length=1, max_length=32, validators=[verb_validator])
    object_type = serializers.CharField(min_length=1, max_length=64)
    object_id = serializers.CharField(min_length=1, max_length=255)
    object_title = serializers.CharField(
        max_length=255, required=False, allow_blank=True, default=""
    )
    target_type = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    target_id = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    target_title = serializers.CharField(
        max_length=255, required=False, allow_blank=True, default=""
    )
    metadata = serializers.DictField(required=False, default=dict)
    time = serializers.DateTimeField(required=False)
    foreign_id = serializers.CharField(
        min_length=1, max_length=255, required=False, allow_null=True
    )

    def validate_metadata(self, value: dict) -> dict:
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > MAX_METADATA_BYTES:
            raise serializers.ValidationError(
                f"metadata must be at most {MAX_METADATA_BYTES} bytes as JSON (got {size})"
            )
        return value

    def validate(self, attrs: dict) -> dict:
        if bool(attrs.get("target_type")) != bool(attrs.get("target_id")):
            raise serializers.ValidationError(
                {"target_id": "target_type and target_id go together: give both or neither"}
            )
        return attrs


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
    foreign_id = serializers.CharField(allow_null=True)


class ActivityPageSerializer(serializers.Serializer):
    items = ActivityOutSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)
