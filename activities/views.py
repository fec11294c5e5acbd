from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from feedsite.api.params import PAGE_PARAMS, keyset_list
from feedsite.api.throttles import WriteThrottle, charge_writes
from follows.access import access_user_for_read

from .access import access_activity_for_owner, access_activity_for_read, access_author_for_read
from .selectors import activity_page, activity_to_dict
from .serializers import (
    ActivityEditSerializer,
    ActivityInSerializer,
    ActivityOutSerializer,
    ActivityPageSerializer,
)
from .services import activity_delete, activity_edit, activity_publish


class ActivityViewSetBase(viewsets.GenericViewSet):
    """Activities: publish (optionally notifying up to 100 users), read, edit and delete (the
    actor or staff)."""

    lookup_url_kwarg = "activity_id"
    lookup_value_regex = r"[^/]+"
    throttle_classes = [WriteThrottle]  # publish, edit and delete (reads pass through)

    @extend_schema(
        request=ActivityInSerializer,
        responses={201: ActivityOutSerializer, 200: ActivityOutSerializer},
    )
    def create(self, request: Request) -> Response:
        data = ActivityInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        charge_writes(request, self, len(set(data.validated_data["notify"])))
        activity, created = activity_publish(actor_id=request.user.pk, data=data.validated_data)
        activity.actor = request.user
        return Response(
            activity_to_dict(activity),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(responses=ActivityOutSerializer)
    def retrieve(self, request: Request, activity_id: str) -> Response:
        activity = access_activity_for_read(user=request.user, activity_id=activity_id)
        return Response(activity_to_dict(activity))

    @extend_schema(request=ActivityEditSerializer, responses=ActivityOutSerializer)
    def partial_update(self, request: Request, activity_id: str) -> Response:
        """Edit (the actor or staff): object_title, target_title, metadata (replaced whole);
        the answer carries edited_at. No PUT: an activity is never replaced whole."""
        activity = access_activity_for_owner(user=request.user, activity_id=activity_id)
        data = ActivityEditSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        edited = activity_edit(activity_id=activity.id, changes=dict(data.validated_data))
        edited.actor = activity.actor
        return Response(activity_to_dict(edited))

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, activity_id: str) -> Response:
        activity = access_activity_for_owner(user=request.user, activity_id=activity_id)
        activity_delete(activity=activity)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuthorActivitiesMixin:
    """`activities` of the users viewset: an author's activities, newest first (403 to the
    users the author blocked)."""

    @extend_schema(parameters=PAGE_PARAMS, responses=ActivityPageSerializer)
    @action(detail=True, methods=["get"])
    def activities(self, request: Request, user_id: str) -> Response:
        user = access_user_for_read(user_id=int(user_id))
        access_author_for_read(user=request.user, author_id=user.pk)
        return keyset_list(
            request,
            "acts",
            lambda before, n: activity_page(actor_id=user.pk, before_id=before, limit=n),
            lambda rows: [activity_to_dict(a) for a in rows],
        )
