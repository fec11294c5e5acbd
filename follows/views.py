from __future__ import annotations

from collections.abc import Callable

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from activities.selectors import activity_to_dict
from activities.serializers import ActivityPageSerializer
from feedsite.api.params import PAGE_PARAMS, keyset_list
from feedsite.api.schema import ObjectPageSchema
from feedsite.api.throttles import RegisterThrottle, WriteThrottle

from .access import access_user_for_read
from .models import OBJECT_ID_MAX_LENGTH, OBJECT_TYPE_MAX_LENGTH
from .selectors import (
    follow_page,
    object_activity_page,
    object_follow_page,
    object_follower_count,
    relation_page,
)
from .serializers import (
    FollowedObjectPageSerializer,
    MeSerializer,
    ObjectFollowedSerializer,
    ObjectRefSerializer,
    ObjectSerializer,
    RegisteredSerializer,
    RegisterSerializer,
    RelatedUserPageSerializer,
    RelatedUserSerializer,
    UserPageSerializer,
    UserSerializer,
)
from .services import (
    block_create,
    block_delete,
    follow_create,
    follow_delete,
    mute_create,
    mute_delete,
    object_follow_create,
    object_follow_delete,
    user_register,
)


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [RegisterThrottle]

    @extend_schema(request=RegisterSerializer, responses={201: RegisteredSerializer})
    def post(self, request: Request) -> Response:
        data = RegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_register(**data.validated_data)
        return Response({"id": user.pk, "username": user.username}, status=status.HTTP_201_CREATED)


class UserViewSetBase(viewsets.GenericViewSet):
    """Users: profiles (public to every signed-in user), follow, block and mute, followers and
    following. Whether a user is a pull author ("is_celebrity") is the feeds' call: the project
    layer sets ``pull_author`` (feedsite.api.viewsets), so this app imports nothing of feeds."""

    lookup_url_kwarg = "user_id"
    lookup_value_regex = r"[0-9]+"
    throttle_classes = [WriteThrottle]  # follow, block, mute (reads pass through)
    pull_author: Callable[[int], bool] = staticmethod(lambda followers: False)

    def user_context(self) -> dict:
        return {"is_pull_author": self.pull_author}

    def _user(self, user_id: str):
        return access_user_for_read(user_id=int(user_id))

    @extend_schema(responses=UserSerializer)
    def retrieve(self, request: Request, user_id: str) -> Response:
        return Response(UserSerializer(self._user(user_id), context=self.user_context()).data)

    @extend_schema(request=None, responses={201: UserSerializer, 200: UserSerializer})
    @action(detail=True, methods=["post"])
    def follow(self, request: Request, user_id: str) -> Response:
        """Follow the user: 201 new, 200 already; 400 yourself; 403 when a block stands."""
        followee = self._user(user_id)
        _, created = follow_create(follower_id=request.user.pk, followee_id=followee.pk)
        followee = self._user(user_id)  # fresh counters
        return Response(
            UserSerializer(followee, context=self.user_context()).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(request=None, responses={204: None})
    @follow.mapping.delete
    def unfollow(self, request: Request, user_id: str) -> Response:
        followee = self._user(user_id)
        follow_delete(follower_id=request.user.pk, followee_id=followee.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _follow_page(self, request: Request, user_id: str, direction: str) -> Response:
        user = self._user(user_id)
        other = "follower" if direction == "followers" else "followee"
        return keyset_list(
            request,
            direction,
            lambda before, n: follow_page(
                user_id=user.pk, direction=direction, before_id=before, limit=n
            ),
            lambda rows: (
                UserSerializer(
                    [getattr(f, other) for f in rows], many=True, context=self.user_context()
                ).data
            ),
        )

    @extend_schema(parameters=PAGE_PARAMS, responses=UserPageSerializer)
    @action(detail=True, methods=["get"])
    def followers(self, request: Request, user_id: str) -> Response:
        """The user's followers, newest follow first."""
        return self._follow_page(request, user_id, "followers")

    @extend_schema(parameters=PAGE_PARAMS, responses=UserPageSerializer)
    @action(detail=True, methods=["get"])
    def following(self, request: Request, user_id: str) -> Response:
        """Whom the user follows, newest follow first."""
        return self._follow_page(request, user_id, "following")

    # Blocks and mutes: POST 201 new, 200 already; 400 yourself; 404 unknown user. DELETE 204,
    # also when there was none.
    def _relate(self, request: Request, user_id: str, create) -> Response:
        other = self._user(user_id)
        row, created = create(request.user.pk, other.pk)
        return Response(
            _related(other, row.created_at),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    def _unrelate(self, request: Request, user_id: str, delete) -> Response:
        other = self._user(user_id)
        delete(request.user.pk, other.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={201: RelatedUserSerializer, 200: RelatedUserSerializer})
    @action(detail=True, methods=["post"])
    def block(self, request: Request, user_id: str) -> Response:
        """Block the user: follows both ways end, neither sees the other's activities."""
        return self._relate(
            request, user_id, lambda me, other: block_create(blocker_id=me, blocked_id=other)
        )

    @extend_schema(request=None, responses={204: None})
    @block.mapping.delete
    def unblock(self, request: Request, user_id: str) -> Response:
        return self._unrelate(
            request, user_id, lambda me, other: block_delete(blocker_id=me, blocked_id=other)
        )

    @extend_schema(request=None, responses={201: RelatedUserSerializer, 200: RelatedUserSerializer})
    @action(detail=True, methods=["post"])
    def mute(self, request: Request, user_id: str) -> Response:
        """Mute the user: their activities leave your feed and notifications; the follow
        stays."""
        return self._relate(
            request, user_id, lambda me, other: mute_create(muter_id=me, muted_id=other)
        )

    @extend_schema(request=None, responses={204: None})
    @mute.mapping.delete
    def unmute(self, request: Request, user_id: str) -> Response:
        return self._unrelate(
            request, user_id, lambda me, other: mute_delete(muter_id=me, muted_id=other)
        )


def _related(user, created_at) -> dict:
    return {"id": user.pk, "username": user.username, "created_at": created_at}


class MeViewSetBase(viewsets.ViewSet):
    """You: your profile (with your email address), the users you blocked and muted."""

    schema = ObjectPageSchema()  # `list` answers one object, not an array

    throttle_classes = [WriteThrottle]
    pull_author: Callable[[int], bool] = staticmethod(lambda followers: False)

    @extend_schema(responses=MeSerializer)
    def list(self, request: Request) -> Response:
        me = access_user_for_read(user_id=request.user.pk)
        return Response(MeSerializer(me, context={"is_pull_author": self.pull_author}).data)

    def _relations(self, request: Request, kind: str) -> Response:
        other = "blocked" if kind == "blocks" else "muted"
        return keyset_list(
            request,
            kind,
            lambda before, n: relation_page(
                user_id=request.user.pk, kind=kind, before_id=before, limit=n
            ),
            lambda rows: [_related(getattr(r, other), r.created_at) for r in rows],
        )

    @extend_schema(parameters=PAGE_PARAMS, responses=RelatedUserPageSerializer)
    @action(detail=False, methods=["get"])
    def blocks(self, request: Request) -> Response:
        """The users you blocked, newest first."""
        return self._relations(request, "blocks")

    @extend_schema(parameters=PAGE_PARAMS, responses=RelatedUserPageSerializer)
    @action(detail=False, methods=["get"])
    def mutes(self, request: Request) -> Response:
        """The users you muted, newest first."""
        return self._relations(request, "mutes")

    @extend_schema(parameters=PAGE_PARAMS, responses=FollowedObjectPageSerializer)
    @action(detail=False, methods=["get"])
    def objects(self, request: Request) -> Response:
        """The objects you follow, newest follow first."""
        return keyset_list(
            request,
            "objects",
            lambda before, n: object_follow_page(
                user_id=request.user.pk, before_id=before, limit=n
            ),
            lambda rows: [
                {"type": r.object_type, "id": r.object_id, "created_at": r.created_at} for r in rows
            ],
        )


# An object is named by query parameters (GET, DELETE) or body fields (POST), never by a path
# segment: its id may hold "/" ("owner/repo").
OBJECT_PARAMS = [
    OpenApiParameter(
        "type",
        {"type": "string", "minLength": 1, "maxLength": OBJECT_TYPE_MAX_LENGTH},
        required=True,
        description="the object's type, as activities' object_type (1-64 characters)",
    ),
    OpenApiParameter(
        "id",
        {"type": "string", "minLength": 1, "maxLength": OBJECT_ID_MAX_LENGTH},
        required=True,
        description="the object's id, as activities' object_id (1-255 characters, '/' allowed)",
    ),
]


def object_ref(data) -> tuple[str, str]:
    """(type, id) from a body or the query parameters: a 400 naming ``type`` or ``id`` when
    missing or invalid (the rules of an activity's object_type and object_id)."""
    if not hasattr(data, "get"):  # a JSON list or string: neither field is there
        raise serializers.ValidationError(
            {"type": ["This field is required."], "id": ["This field is required."]}
        )
    ref = ObjectRefSerializer(data=data)
    ref.is_valid(raise_exception=True)
    return ref.validated_data["type"], ref.validated_data["id"]


class ObjectViewSetBase(viewsets.ViewSet):
    """Objects (``type:id``, what activities are about: a project, a channel, a topic): follow
    and unfollow one, its followers count, its activities. Whether an object is pulled at read
    time ("is_celebrity") is the feeds' call: the project layer sets ``pull_author``
    (feedsite.api.viewsets), as for users."""

    schema = ObjectPageSchema()  # `list` answers one object, not an array
    throttle_classes = [WriteThrottle]  # follow and unfollow (reads pass through)
    pull_author: Callable[[int], bool] = staticmethod(lambda followers: False)

    def _object(self, object_type: str, object_id: str) -> dict:
        count = object_follower_count(object_type=object_type, object_id=object_id)
        return {
            "type": object_type,
            "id": object_id,
            "followers_count": count,
            "is_celebrity": self.pull_author(count),
        }

    @extend_schema(parameters=OBJECT_PARAMS, responses=ObjectSerializer)
    def list(self, request: Request) -> Response:
        """An object and its followers count (0 for an object nobody follows)."""
        return Response(self._object(*object_ref(request.query_params)))

    @extend_schema(
        request=ObjectRefSerializer,
        responses={201: ObjectFollowedSerializer, 200: ObjectFollowedSerializer},
    )
    @action(detail=False, methods=["post"])
    def follow(self, request: Request) -> Response:
        """Follow the object: 201 new, 200 already."""
        object_type, object_id = object_ref(request.data)
        row, created = object_follow_create(
            user_id=request.user.pk, object_type=object_type, object_id=object_id
        )
        return Response(
            {**self._object(object_type, object_id), "created_at": row.created_at},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(parameters=OBJECT_PARAMS, request=None, responses={204: None})
    @follow.mapping.delete
    def unfollow(self, request: Request) -> Response:
        """Unfollow the object: 204, also when you did not follow it."""
        object_type, object_id = object_ref(request.query_params)
        object_follow_delete(user_id=request.user.pk, object_type=object_type, object_id=object_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(parameters=[*OBJECT_PARAMS, *PAGE_PARAMS], responses=ActivityPageSerializer)
    @action(detail=False, methods=["get"])
    def activities(self, request: Request) -> Response:
        """The activities about the object (as their object or their target), newest first;
        those of users you blocked or who blocked you are left out."""
        object_type, object_id = object_ref(request.query_params)
        return keyset_list(
            request,
            "objacts",
            lambda before, n: object_activity_page(
                object_type=object_type,
                object_id=object_id,
                viewer_id=request.user.pk,
                before_id=before,
                limit=n,
            ),
            lambda rows: [activity_to_dict(a) for a in rows],
        )
