from __future__ import annotations

from collections.abc import Callable

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedsite.api.cursor import keyset_before, keyset_page
from feedsite.api.params import PAGE_PARAMS, next_page_link, parse_limit
from feedsite.api.throttles import RegisterThrottle, WriteThrottle

from .access import access_user_for_read
from .selectors import follow_page, relation_page
from .serializers import (
    MeSerializer,
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
    user_register,
)


class _UserApi(APIView):
    """Views that show users. Whether a user is a pull author ("is_celebrity") is the feeds'
    call: the URL conf passes their predicate in (`as_view(pull_author=...)`), so this app
    imports nothing of feeds."""

    pull_author: Callable[[int], bool] = staticmethod(lambda followers: False)

    def user_context(self) -> dict:
        return {"is_pull_author": self.pull_author}


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


class UserDetailApi(_UserApi):
    @extend_schema(responses=UserSerializer)
    def get(self, request: Request, user_id: int) -> Response:
        user = access_user_for_read(user_id=user_id)
        return Response(UserSerializer(user, context=self.user_context()).data)


class UserFollowApi(_UserApi):
    throttle_classes = [WriteThrottle]

    @extend_schema(request=None, responses={201: UserSerializer, 200: UserSerializer})
    def post(self, request: Request, user_id: int) -> Response:
        followee = access_user_for_read(user_id=user_id)
        _, created = follow_create(follower_id=request.user.pk, followee_id=followee.pk)
        followee = access_user_for_read(user_id=user_id)  # fresh counters
        return Response(
            UserSerializer(followee, context=self.user_context()).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, user_id: int) -> Response:
        followee = access_user_for_read(user_id=user_id)
        follow_delete(follower_id=request.user.pk, followee_id=followee.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class _FollowListApi(_UserApi):
    direction = "followers"

    @extend_schema(parameters=PAGE_PARAMS, responses=UserPageSerializer)
    def get(self, request: Request, user_id: int) -> Response:
        user = access_user_for_read(user_id=user_id)
        limit = parse_limit(request.query_params.get("limit"))
        before = keyset_before(self.direction, request.query_params.get("cursor"))
        rows, next_cursor = keyset_page(
            follow_page(
                user_id=user.pk, direction=self.direction, before_id=before, limit=limit + 1
            ),
            limit=limit,
            kind=self.direction,
            key=lambda f: f.id,
        )
        other = "follower" if self.direction == "followers" else "followee"
        users = [getattr(f, other) for f in rows]
        return Response(
            {
                "items": UserSerializer(users, many=True, context=self.user_context()).data,
                "next_cursor": next_cursor,
            },
            headers=next_page_link(request, next_cursor),
        )


class UserFollowersApi(_FollowListApi):
    direction = "followers"


class UserFollowingApi(_FollowListApi):
    direction = "following"


def _related(user, created_at) -> dict:
    return {"id": user.pk, "username": user.username, "created_at": created_at}


class _RelationApi(APIView):
    """POST: 201 new, 200 already; 400 oneself; 404 unknown user. DELETE: 204, also when there
    was none. Throttled as follows are."""

    throttle_classes = [WriteThrottle]
    create = staticmethod(block_create)
    delete_ = staticmethod(block_delete)
    names = ("blocker_id", "blocked_id")

    @extend_schema(request=None, responses={201: RelatedUserSerializer, 200: RelatedUserSerializer})
    def post(self, request: Request, user_id: int) -> Response:
        other = access_user_for_read(user_id=user_id)
        row, created = self.create(
            **dict(zip(self.names, (request.user.pk, other.pk), strict=True))
        )
        return Response(
            _related(other, row.created_at),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, user_id: int) -> Response:
        other = access_user_for_read(user_id=user_id)
        self.delete_(**dict(zip(self.names, (request.user.pk, other.pk), strict=True)))
        return Response(status=status.HTTP_204_NO_CONTENT)


class UserBlockApi(_RelationApi):
    """Block a user: follows both ways end, neither sees the other's activities."""


class UserMuteApi(_RelationApi):
    """Mute a user: their activities leave your feed and notifications; the follow stays."""

    create = staticmethod(mute_create)
    delete_ = staticmethod(mute_delete)
    names = ("muter_id", "muted_id")


class _RelationListApi(APIView):
    kind = "blocks"

    @extend_schema(parameters=PAGE_PARAMS, responses=RelatedUserPageSerializer)
    def get(self, request: Request) -> Response:
        limit = parse_limit(request.query_params.get("limit"))
        before = keyset_before(self.kind, request.query_params.get("cursor"))
        rows, next_cursor = keyset_page(
            relation_page(
                user_id=request.user.pk, kind=self.kind, before_id=before, limit=limit + 1
            ),
            limit=limit,
            kind=self.kind,
            key=lambda r: r.id,
        )
        other = "blocked" if self.kind == "blocks" else "muted"
        return Response(
            {
                "items": [_related(getattr(r, other), r.created_at) for r in rows],
                "next_cursor": next_cursor,
            },
            headers=next_page_link(request, next_cursor),
        )


class MyBlocksApi(_RelationListApi):
    """The users you blocked, newest first."""

    kind = "blocks"


class MyMutesApi(_RelationListApi):
    """The users you muted, newest first."""

    kind = "mutes"


class MeApi(_UserApi):
    """Your own profile (with your email address)."""

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        me = access_user_for_read(user_id=request.user.pk)
        return Response(MeSerializer(me, context=self.user_context()).data)
