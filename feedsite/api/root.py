"""GET /api/: the API root. The browsable API in a browser, JSON otherwise: where each resource
lives, as absolute URLs: the router's viewsets (feedsite.urls) and the auth and docs views."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

# name -> URL name; user-scoped resources are listed with a {user_id} template.
ROOT = {
    "register": "register",
    "token": "token",
    "logout": "logout",
    "logout-all": "logout-all",
    "activities": "activity-list",
    "feed": "feed-list",
    "notifications": "notification-list",
    "notification-counts": "notification-counts",
    "notifications-seen": "notification-seen",
    "notifications-read": "notification-read",
    "me": "me-list",
    "notification-settings": "me-notification-settings",
    "blocks": "me-blocks",
    "mutes": "me-mutes",
    "schema": "schema",
    "docs": "docs",
    "redoc": "redoc",
}
USER_SCOPED = (
    "user-detail",
    "user-follow",
    "user-followers",
    "user-following",
    "user-activities",
    "user-block",
    "user-mute",
)


class ApiRootSerializer(serializers.Serializer):
    resources = serializers.DictField(child=serializers.URLField())
    user_resources = serializers.DictField(child=serializers.CharField())
    feed_stream = serializers.URLField()


class ApiRoot(APIView):
    """The resources of the API. Authenticate with `Authorization: Token <token>` (from
    `token`) or log in (top right) to browse them."""

    permission_classes = [AllowAny]

    @extend_schema(responses=ApiRootSerializer)
    def get(self, request: Request) -> Response:
        links = {name: reverse(url, request=request) for name, url in ROOT.items()}
        users = {
            url.removeprefix("user-") if url != "user-detail" else "user": reverse(
                url, kwargs={"user_id": 0}, request=request
            ).replace("/0/", "/{user_id}/")
            for url in USER_SCOPED
        }
        stream = request.build_absolute_uri("/api/feed/stream/")
        return Response({"resources": links, "user_resources": users, "feed_stream": stream})
