from __future__ import annotations

from collections.abc import Callable

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedsite.api.params import PAGE_PARAMS, keyset_list
from feedsite.api.schema import ObjectPageSchema
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
