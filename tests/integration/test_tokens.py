"""API tokens: hashed at rest, expiring, revocable one by one and all at once, at once despite
the Redis cache; a warm request still makes no SQL query."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
PASSWORD = "pw-correct-horse-9"  # tests.factories


def login(api: APIClient, user) -> str:
    res = api.post(
        "/api/auth/token/", {"username": user.username, "password": PASSWORD}, format="json"
    )
    assert res.status_code == 200, res.content
    assert res.json()["expiry"]
    return res.json()["token"]


def client_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_tokens_are_stored_hashed_and_expire(api, settings):
    user = UserFactory()
    token = login(api, user)
    row = AuthToken.objects.get(user=user)
    assert token not in (row.digest, row.token_key) and len(row.digest) == 128
    expected = timezone.now() + timedelta(days=settings.FEEDSITE_TOKEN_TTL_DAYS)
    assert abs((row.expiry - expected).total_seconds()) < 60
    client = client_with(token)
    assert client.get(f"/api/users/{user.pk}/").status_code == 200  # (now cached)
    AuthToken.objects.filter(pk=row.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    from feeds import store
    from feedsite.api.auth import token_digest

    store.token_delete([token_digest(token)])  # the cache entry's own TTL ends with the token
    assert client.get(f"/api/users/{user.pk}/").status_code == 401
    assert not AuthToken.objects.filter(pk=row.pk).exists()  # an expired token is removed


def test_logout_revokes_this_token_at_once_and_logoutall_every_token(api):
    user = UserFactory()
    first, second, third = (client_with(login(api, user)) for _ in range(3))
    for c in (first, second, third):
        assert c.get("/api/feed/").status_code == 200  # cached in Redis now
    assert first.post("/api/auth/logout/").status_code == 204
    assert first.get("/api/feed/").status_code == 401
    assert second.get("/api/feed/").status_code == 200
    assert second.post("/api/auth/logoutall/").status_code == 204
    assert second.get("/api/feed/").status_code == 401
    assert third.get(f"/api/users/{user.pk}/").status_code == 401
    assert not AuthToken.objects.filter(user=user).exists()


def test_logging_in_past_the_limit_retires_the_oldest_token(api, settings):
    settings.FEEDSITE_TOKENS_PER_USER = 2
    user = UserFactory()
    oldest = client_with(login(api, user))
    assert oldest.get("/api/feed/").status_code == 200
    login(api, user)
    login(api, user)
    assert AuthToken.objects.filter(user=user).count() == 2
    assert oldest.get("/api/feed/").status_code == 401


def test_plain_tokens_of_an_earlier_version_keep_working_once_hashed():
    """The data migration: a rest_framework.authtoken row becomes a knox row, hashed."""
    from django.apps import apps
    from rest_framework.authtoken.models import Token

    migration = __import__(
        "feedsite.migrations.0001_hash_plain_tokens", fromlist=["hash_plain_tokens"]
    )
    user = UserFactory()
    plain = Token.objects.create(user=user, key="0123456789abcdef0123456789abcdef01234567")
    migration.hash_plain_tokens(apps, None)
    assert not Token.objects.exists()
    assert AuthToken.objects.filter(user=user).count() == 1
    assert client_with(plain.key).get(f"/api/users/{user.pk}/").status_code == 200
