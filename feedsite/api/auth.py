"""Token authentication: django-rest-knox tokens (hashed at rest, expiring, revocable one by
one or all at once), with the token -> user lookup cached in Redis.

knox keeps only a SHA-512 digest of each token in PostgreSQL. A request's lookup is cached in the
feed store under the first 40 hex digits of that same digest, so a warm request makes no SQL
query; deleting a token (logout, logout everywhere, admin, expiry) or changing its user drops the
entry at once (feedsite.api.signals), and an entry never outlives its token's expiry. The lean
feed read (feeds.views) checks that entry inside its first Redis round trip; it only needs to
know, beforehand, which user the token claims: new tokens carry the user id in front
("<hex id>.<random>", as Laravel Sanctum's "id|secret"), others are learnt once per process."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import orjson
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest
from django.utils import timezone
from knox import crypto
from knox.auth import TokenAuthentication
from knox.models import AuthToken
from knox.settings import CONSTANTS, knox_settings
from rest_framework import exceptions

from feeds import store

FIELDS = ("id", "username", "is_active", "is_staff", "is_superuser")
# digest -> user id, per process: which user a token claims, confirmed against Redis on every
# request. Bounded: cleared when full (a refill costs one round trip per token).
_HINTS: dict[str, int] = {}
MAX_HINTS = 200_000


def token_digest(key: str) -> str:
    """The cache key of a token: the head of knox's digest of it (so a deleted AuthToken row
    names the entry to drop without the token)."""
    return hashlib.sha512(key.encode()).hexdigest()[:40]


def _cache(digest: str, user, expiry) -> dict:
    fields = {f: getattr(user, f) for f in FIELDS}
    ttl = settings.FEEDSITE_TOKEN_CACHE_SECONDS
    if expiry is not None:
        ttl = min(ttl, int(expiry.timestamp() - time.time()))
    if ttl > 0:
        store.token_set(digest, orjson.dumps(fields), ttl)
    return fields


def _user_from_fields(fields: dict):
    user = get_user_model()(**fields)
    user._state.adding = False
    user._state.db = "default"
    return user


class CachedTokenAuthentication(TokenAuthentication):
    """knox's `Authorization: Token <token>`, answered from the Redis cache when warm. The
    request's ``auth`` is the token string on the cached path, the AuthToken row otherwise."""

    def authenticate_credentials(self, token: bytes):
        key = token.decode("utf-8", "replace")
        digest = token_digest(key)
        try:
            raw = store.token_get(digest)
        except store.STORE_ERRORS as exc:  # Redis unavailable: the database answers alone
            if not store.store_unavailable(exc):
                raise
            return self._lookup(key)
        if raw is None:
            user, auth_token = self._lookup(key)
            _cache(digest, user, auth_token.expiry)
            return user, auth_token
        user = _user_from_fields(orjson.loads(raw))
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return user, key

    def _lookup(self, key: str):
        row = _lookup_row(key)
        if row is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        return self.validate_user(row)


def _prefix(user_id: int) -> str:
    prefix = f"{user_id:x}."
    return prefix if len(prefix) <= CONSTANTS.MAXIMUM_TOKEN_PREFIX_LENGTH else ""


def _lookup_row(key: str) -> AuthToken | None:
    """The token's row, by its digest (knox's primary key: one indexed query with the user,
    where knox's own lookup makes three); an expired one is deleted and not returned."""
    row = AuthToken.objects.select_related("user").filter(digest=crypto.hash_token(key)).first()
    if row is not None and row.expiry is not None and row.expiry < timezone.now():
        row.delete()
        return None
    return row


def token_create(user) -> tuple[str, AuthToken]:
    """A new token for ``user`` (knox: random, hashed at rest, expiring after REST_KNOX's
    TOKEN_TTL), with the user id in front when it fits knox's prefix limit. Returns the token,
    shown once, and its row."""
    row, token = AuthToken.objects.create(user=user, prefix=_prefix(user.pk))
    return token, row


def new_token_key(user_id: int) -> str:
    """A token string in the format token_create issues (not stored)."""
    return _prefix(user_id) + crypto.create_token_string()


def tokens_bulk_create(user_ids: list[int]) -> dict[int, str]:
    """One new token per user, in one INSERT (benchmarks, imports): user id -> token."""
    expiry = timezone.now() + knox_settings.TOKEN_TTL
    tokens = {uid: new_token_key(uid) for uid in user_ids}
    AuthToken.objects.bulk_create(
        [
            AuthToken(
                digest=crypto.hash_token(t),
                token_key=t[: CONSTANTS.TOKEN_KEY_LENGTH],
                user_id=uid,
                expiry=expiry,
            )
            for uid, t in tokens.items()
        ],
        batch_size=5000,
    )
    return tokens


@dataclass(frozen=True)
class TokenClaim:
    key: str
    digest: str
    user_id: int


def token_claim(request: HttpRequest) -> TokenClaim | None:
    """The token in ``Authorization: Token <key>`` and the user it claims to be, without a round
    trip when this process has seen the token (confirm with token_confirm). None: no token
    header, or a token that resolves to no active user (DRF answers those with its 401)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header.startswith("Token "):
        return None
    key = header[6:].strip()
    if not key or " " in key:
        return None
    digest = token_digest(key)
    user_id = _claimed_id(key) or _HINTS.get(digest)
    if user_id is None:
        try:
            raw = store.token_get(digest)
        except store.STORE_ERRORS as exc:
            if not store.store_unavailable(exc):
                raise
            return None  # Redis unavailable: the DRF view answers (503 for the feed)
        user_id = _resolve(key, digest, raw)
        if user_id is None:
            return None
    return TokenClaim(key, digest, user_id)


def _claimed_id(key: str) -> int | None:
    head, dot, _ = key.partition(".")
    if not dot or not 0 < len(head) <= 15:
        return None
    try:
        return int(head, 16)
    except ValueError:
        return None


def token_confirm(claim: TokenClaim, raw: bytes | None) -> bool:
    """Whether the cached token entry read in the same round trip as the rest of the request
    confirms the claim (an expired entry is loaded again from the database)."""
    if raw is not None:
        fields = orjson.loads(raw)
        if fields["id"] == claim.user_id and fields["is_active"]:
            return True
    _HINTS.pop(claim.digest, None)
    return raw is None and _resolve(claim.key, claim.digest, None) == claim.user_id


def _resolve(key: str, digest: str, raw: bytes | None) -> int | None:
    if raw is not None:
        fields = orjson.loads(raw)
    else:  # a cache miss: knox looks the token up (and the entry is cached for next time)
        try:
            user, _ = CachedTokenAuthentication().authenticate_credentials(key.encode())
        except exceptions.AuthenticationFailed:
            return None
        fields = {f: getattr(user, f) for f in FIELDS}
    if not fields["is_active"]:
        return None
    if len(_HINTS) >= MAX_HINTS:
        _HINTS.clear()
    _HINTS[digest] = fields["id"]
    return fields["id"]


def invalidate_digests(digests: list[str]) -> None:
    """Drop the cache entries of these knox digests (rows deleted, or their user changed)."""
    store.token_delete([d[:40] for d in digests])


def invalidate_user_tokens(user_id: int) -> None:
    invalidate_digests(
        list(AuthToken.objects.filter(user_id=user_id).values_list("digest", flat=True))
    )


def token_user(key: str):
    """The active user a token belongs to (through the same cache as every request), or None:
    for endpoints outside DRF (the SSE stream)."""
    try:
        user, _ = CachedTokenAuthentication().authenticate_credentials(key.encode())
    except exceptions.AuthenticationFailed:
        return None
    return user
