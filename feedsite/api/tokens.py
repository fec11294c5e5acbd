"""POST /api/auth/token/: a username and password in, the user's API token out."""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedsite.errors import InvalidInput
from follows.serializers import CredentialsSerializer, TokenSerializer

from .auth import new_token_key
from .throttles import LoginThrottle


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
