"""Tokens: log in (a username and password in, a new token out), log out (this token, however
the scheme was spelled: knox reads `token`, `TOKEN`, a tab), log out everywhere (every token of
the user). A 204 means revoked everywhere (feedsite.api.auth.tokens_revoke). Tokens are
django-rest-knox's: hashed at rest, expiring after FEEDSITE_TOKEN_TTL_DAYS; at most
FEEDSITE_TOKENS_PER_USER live at once."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate, logout
from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from knox import crypto
from knox.models import AuthToken
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedsite.errors import InvalidInput
from follows.serializers import CredentialsSerializer

from .auth import token_cache_fill, token_create, token_login_lock, tokens_revoke
from .throttles import LoginThrottle


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="shown once; send as `Authorization: Token <token>`")
    expiry = serializers.DateTimeField(allow_null=True)


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
        with transaction.atomic():
            user = token_login_lock(user)
            if not user.is_active:  # deactivated while the password was being checked
                raise InvalidInput("unable to log in with the given username and password")
            for expired in AuthToken.objects.filter(user=user, expiry__lt=timezone.now()):
                expired.delete()
            token, row = token_create(user)
            # The oldest tokens beyond the per-user limit go (a deleted row drops its cache entry).
            stale = AuthToken.objects.filter(user=user).order_by("-created")[
                settings.FEEDSITE_TOKENS_PER_USER :
            ]
            for old in stale:
                old.delete()
        token_cache_fill(token, user, row.expiry)
        return Response({"token": token, "expiry": row.expiry})


class LogoutApi(APIView):
    """This token stops working at once, on every process (a session: it ends). When the token
    cache cannot be written: 503 with Retry-After, and the token still works."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request) -> Response:
        if isinstance(request.auth, AuthToken):  # looked up in the database
            tokens_revoke(AuthToken.objects.filter(digest=request.auth.digest))
        elif isinstance(request.auth, str):  # from the cache: the token itself
            tokens_revoke(AuthToken.objects.filter(digest=crypto.hash_token(request.auth)))
        else:  # the browsable API's session
            logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutAllApi(APIView):
    """Every token of the caller stops working at once (log out everywhere)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request) -> Response:
        tokens_revoke(AuthToken.objects.filter(user_id=request.user.pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
