from __future__ import annotations

import time

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from activities.serializers import ActivityOutSerializer
from feedsite.api.params import cursor_int, make_cursor, parse_cursor, parse_limit
from feedsite.api.throttles import FeedReadThrottle

from . import store
from .read import FeedCursor, feed_page


class FeedItemSerializer(ActivityOutSerializer):
    actor_count = serializers.IntegerField()
    actors = serializers.ListField(child=serializers.DictField())
    activity_ids = serializers.ListField(child=serializers.CharField())


class FeedListApi(APIView):
    """The caller's home feed: aggregated, newest first, paged with an opaque cursor."""

    throttle_classes = [FeedReadThrottle]

    @extend_schema(
        parameters=[
            OpenApiParameter("limit", int, description="1-100, default 20"),
            OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
        ],
        responses=inline_serializer(
            "FeedPage",
            {
                "items": FeedItemSerializer(many=True),
                "next_cursor": serializers.CharField(allow_null=True),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        limit = parse_limit(request.query_params.get("limit"))
        payload = parse_cursor("feed", request.query_params.get("cursor"))
        cursor = FeedCursor(cursor_int(payload, "t"), cursor_int(payload, "c")) if payload else None
        started = time.perf_counter()
        items, nxt = feed_page(user_id=request.user.pk, limit=limit, cursor=cursor)
        store.observe_buffered("read_seconds", (time.perf_counter() - started) * 1000)
        token = make_cursor("feed", {"t": nxt.top, "c": nxt.last}) if nxt else None
        return Response({"items": items, "next_cursor": token})
