from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedsite.api.params import cursor_int, make_cursor, parse_cursor, parse_limit
from feedsite.api.throttles import WriteThrottle
from follows.access import access_user_for_read

from .access import access_activity_for_owner, access_activity_for_read
from .selectors import activity_page, activity_to_dict
from .serializers import (
    ActivityInSerializer,
    ActivityOutSerializer,
    ActivityPageSerializer,
    FanoutStatusSerializer,
)
from .services import activity_delete, activity_publish

PAGE_PARAMS = [
    OpenApiParameter("limit", int, description="1-100, default 20"),
    OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
]


class ActivityCreateApi(APIView):
    throttle_classes = [WriteThrottle]

    @extend_schema(
        request=ActivityInSerializer,
        responses={201: ActivityOutSerializer, 200: ActivityOutSerializer},
    )
    def post(self, request: Request) -> Response:
        data = ActivityInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        activity, created = activity_publish(actor_id=request.user.pk, data=data.validated_data)
        activity.actor = request.user
        return Response(
            activity_to_dict(activity),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ActivityDetailApi(APIView):
    @extend_schema(responses=ActivityOutSerializer)
    def get(self, request: Request, activity_id: str) -> Response:
        activity = access_activity_for_read(user=request.user, activity_id=activity_id)
        return Response(activity_to_dict(activity))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, activity_id: str) -> Response:
        activity = access_activity_for_owner(user=request.user, activity_id=activity_id)
        activity_delete(activity=activity)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ActivityFanoutApi(APIView):
    @extend_schema(responses=FanoutStatusSerializer)
    def get(self, request: Request, activity_id: str) -> Response:
        from feeds.selectors import fanout_status

        activity = access_activity_for_owner(user=request.user, activity_id=activity_id)
        return Response(FanoutStatusSerializer(fanout_status(activity_id=activity.id)).data)


class UserActivitiesApi(APIView):
    @extend_schema(parameters=PAGE_PARAMS, responses=ActivityPageSerializer)
    def get(self, request: Request, user_id: int) -> Response:
        user = access_user_for_read(user_id=user_id)
        limit = parse_limit(request.query_params.get("limit"))
        before = cursor_int(parse_cursor("acts", request.query_params.get("cursor")), "before")
        rows = activity_page(actor_id=user.pk, before_id=before, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = make_cursor("acts", {"before": rows[-1].id}) if more else None
        return Response({"items": [activity_to_dict(a) for a in rows], "next_cursor": next_cursor})
