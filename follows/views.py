from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from activities.views import PAGE_PARAMS
from feeds.conf import get_conf
from feedsite.api.auth import new_token_key
from feedsite.api.params import cursor_int, make_cursor, parse_cursor, parse_limit
from feedsite.api.throttles import LoginThrottle, RegisterThrottle, WriteThrottle
from feedsite.errors import InvalidInput

from .access import access_user_for_read
from .selectors import follow_page
from .serializers import (
    CredentialsSerializer,
    RegisteredSerializer,
    RegisterSerializer,
    TokenSerializer,
    UserPageSerializer,
    UserSerializer,
)
from .services import follow_create, follow_delete, user_register


def _user_context() -> dict:
    return {"celebrity_threshold": get_conf().celebrity_threshold}


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


class TokenApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [LoginThrottle]

    @extend_schema(request=CredentialsSerializer, responses={200: TokenSerializer})
    def post(self, request: Request) -> Response:
        data = CredentialsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request=request, **data.validated_data)
        if user is None:
            raise InvalidInput("unable to log in with the given username and password")
        token, _ = Token.objects.get_or_create(user=user, defaults={"key": new_token_key(user.pk)})
        return Response({"token": token.key})


class UserDetailApi(APIView):
    @extend_schema(responses=UserSerializer)
    def get(self, request: Request, user_id: int) -> Response:
        user = access_user_for_read(user_id=user_id)
        return Response(UserSerializer(user, context=_user_context()).data)


class UserFollowApi(APIView):
    throttle_classes = [WriteThrottle]

    @extend_schema(request=None, responses={201: UserSerializer, 200: UserSerializer})
    def post(self, request: Request, user_id: int) -> Response:
        followee = access_user_for_read(user_id=user_id)
        _, created = follow_create(follower_id=request.user.pk, followee_id=followee.pk)
        followee = access_user_for_read(user_id=user_id)  # fresh counters
        return Response(
            UserSerializer(followee, context=_user_context()).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, user_id: int) -> Response:
        followee = access_user_for_read(user_id=user_id)
        follow_delete(follower_id=request.user.pk, followee_id=followee.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class _FollowListApi(APIView):
    direction = "followers"

    @extend_schema(parameters=PAGE_PARAMS, responses=UserPageSerializer)
    def get(self, request: Request, user_id: int) -> Response:
        user = access_user_for_read(user_id=user_id)
        limit = parse_limit(request.query_params.get("limit"))
        before = cursor_int(
            parse_cursor(self.direction, request.query_params.get("cursor")), "before"
        )
        rows = follow_page(
            user_id=user.pk, direction=self.direction, before_id=before, limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        other = "follower" if self.direction == "followers" else "followee"
        users = [getattr(f, other) for f in rows]
        return Response(
            {
                "items": UserSerializer(users, many=True, context=_user_context()).data,
                "next_cursor": make_cursor(self.direction, {"before": rows[-1].id})
                if more
                else None,
            }
        )


class UserFollowersApi(_FollowListApi):
    direction = "followers"


class UserFollowingApi(_FollowListApi):
    direction = "following"
