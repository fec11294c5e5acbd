"""Token authentication: django-rest-knox tokens (hashed at rest, expiring, revocable one by
one or all at once), with the token -> user lookup cached in Redis.

knox keeps only a SHA-512 digest of each token in PostgreSQL. A request's lookup is cached in the
feed store under the first 40 hex digits of that same digest, so a warm request makes no SQL
query; deleting a token (logout, logout everywhere, admin, expiry), changing it or its user
turns the entry into a tombstone at once and again after commit (feedsite.api.signals), which
no refill overwrites, and an entry never outlives its token's expiry. A token the cache does not
confirm costs one query at most, and failures are throttled per client address. The lean
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
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from knox import crypto
from knox.auth import TokenAuthentication
from knox.models import AuthToken
from knox.settings import CONSTANTS, knox_settings
from rest_framework import HTTP_HEADER_ENCODING, exceptions

from feeds import store
from feedsite.addresses import address_bucket

from .throttles import count_window, parse_rate

FIELDS = ("id", "username", "is_active", "is_staff", "is_superuser")
# digest -> user id, per process: which user a token claims, confirmed against Redis on every
# request. Bounded: cleared when full (a refill costs one round trip per token).
_HINTS: dict[str, int] = {}
MAX_HINTS = 200_000
# How long a revoked or changed token's entry stays a tombstone (store.TOMBSTONE): no request
# trusts or refills the cache meanwhile, so a lookup that read the row before the revocation
# committed cannot write it back. 60 s: a lookup takes milliseconds; a request stalled longer
# than this between its query and its cache write is the one case left.
TOMBSTONE_SECONDS = 60
AUTH_FAIL_SCOPE = "auth_fail"  # failed token authentications, per client address
INVALID = "Invalid token."
INACTIVE = "User inactive or deleted."


def token_digest(key: str) -> str:
    """The cache key of a token: the head of knox's digest of it (so a deleted AuthToken row
    names the entry to drop without the token)."""
    return hashlib.sha512(key.encode()).hexdigest()[:40]


def token_from_header(meta: dict) -> str | None:
    """The token of an ``Authorization`` header read as knox reads it (DRF's bytes split on
    any whitespace, the scheme in any case: ``Token``, ``token``, ``TOKEN``, a tab after it).
    None: no header or another scheme. A Token header without exactly one credential raises
    knox's AuthenticationFailed."""
    header = meta.get("HTTP_AUTHORIZATION") or ""
    parts = header.encode(HTTP_HEADER_ENCODING, "replace").split()
    if not parts or parts[0].lower() != knox_settings.AUTH_HEADER_PREFIX.lower().encode():
        return None
    if len(parts) == 1:
        raise exceptions.AuthenticationFailed("Invalid token header. No credentials provided.")
    if len(parts) > 2:
        raise exceptions.AuthenticationFailed(
            "Invalid token header. Token string should not contain spaces."
        )
    return parts[1].decode("utf-8", "replace")


def entry_fields(raw: bytes | None) -> dict | None:
    """A cached entry's user fields; None for no entry, a tombstone or anything unreadable."""
    if raw is None or raw == store.TOMBSTONE:
        return None
    try:
        fields = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return fields if isinstance(fields, dict) and "id" in fields else None


def _fill(digest: str, user, expiry) -> None:
    """Cache a confirmed lookup (never over a tombstone); the entry never outlives the token.
    An unavailable store is skipped: the lookup stands."""
    ttl = settings.FEEDSITE_TOKEN_CACHE_SECONDS
    if expiry is not None:
        ttl = min(ttl, int(expiry.timestamp() - time.time()))
    if ttl > 0:
        try:
            store.token_fill(digest, orjson.dumps({f: getattr(user, f) for f in FIELDS}), ttl)
        except store.STORE_ERRORS as exc:
            if not store.store_unavailable(exc):
                raise


def _user_from_fields(fields: dict):
    user = get_user_model()(**fields)
    user._state.adding = False
    user._state.db = "default"
    return user


def _auth_fail_rate() -> tuple[int, int]:
    return parse_rate(settings.FEEDSITE_THROTTLE_RATES[AUTH_FAIL_SCOPE])


def _refuse_if_failing(address: str | None) -> None:
    """429 (Throttled, with the window's seconds left) when ``address`` is past its failed
    authentications in this window; before any database query. Fails open when Redis is
    unavailable."""
    if address is None:
        return
    limit, window = _auth_fail_rate()
    try:
        hits, left = store.window_hits(AUTH_FAIL_SCOPE, f"ip:{address_bucket(address)}", window)
    except store.STORE_ERRORS as exc:
        if not store.store_unavailable(exc):
            raise
        return
    if hits >= limit:
        raise exceptions.Throttled(left)


def _count_failure(address: str | None) -> None:
    """One more failed authentication from ``address`` (never against the user a token
    names)."""
    if address is None:
        return
    count_window(AUTH_FAIL_SCOPE, f"ip:{address_bucket(address)}", _auth_fail_rate()[1])


def _key_from_header(meta: dict, address: str | None) -> str | None:
    """token_from_header, a malformed Token header counted as a failed authentication of
    ``address`` (past its limit: Throttled before anything else)."""
    try:
        return token_from_header(meta)
    except exceptions.AuthenticationFailed:
        _refuse_if_failing(address)
        _count_failure(address)
        raise


def token_lookup(key: str, digest: str, address: str | None, fill: bool = True):
    """A token the cache does not confirm, from the database: at most one query, after the
    failure throttle of ``address`` (None: not throttled, e.g. a stream's re-check). Returns
    (user, AuthToken row) and caches the entry; a failure counts against the address and raises
    AuthenticationFailed (Throttled past the limit)."""
    _refuse_if_failing(address)
    try:
        row = _lookup_row(key)
        if row is None:
            raise exceptions.AuthenticationFailed(INVALID)
        if not row.user.is_active:
            raise exceptions.AuthenticationFailed(INACTIVE)
    except exceptions.AuthenticationFailed:
        _count_failure(address)
        raise
    if fill:
        _fill(digest, row.user, row.expiry)
    return row.user, row


def authenticate_key(key: str, address: str | None = None):
    """(user, auth) for a token: from its cache entry (auth is the token string; no SQL), else
    from the database (auth is the AuthToken row; token_lookup). Raises AuthenticationFailed,
    or Throttled when ``address`` is past its failed authentications."""
    digest = token_digest(key)
    try:
        raw = store.token_get(digest)
    except store.STORE_ERRORS as exc:  # Redis unavailable: the database answers alone
        if not store.store_unavailable(exc):
            raise
        return token_lookup(key, digest, None, fill=False)
    fields = entry_fields(raw)
    if fields is None:
        return token_lookup(key, digest, address)
    if not fields.get("is_active"):
        raise exceptions.AuthenticationFailed(INACTIVE)
    return _user_from_fields(fields), key


def client_ip(request) -> str:
    """The client's address as the throttles see it (REMOTE_ADDR, set from trusted proxies
    only: feedsite.middleware)."""
    return request.META.get("REMOTE_ADDR") or ""


class CachedTokenAuthentication(TokenAuthentication):
    """knox's `Authorization: Token <token>`, answered from the Redis cache when warm. The
    request's ``auth`` is the token string on the cached path, the AuthToken row otherwise.
    Failed authentications are throttled per client address (FEEDSITE_THROTTLE_AUTH_FAIL)."""

    def authenticate(self, request):
        key = _key_from_header(request.META, client_ip(request))
        if key is None:
            return None
        return authenticate_key(key, client_ip(request))

    def authenticate_credentials(self, token: bytes):
        return authenticate_key(token.decode("utf-8", "replace"))


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


def token_login_lock(user):
    """The user's row, locked for the rest of the transaction and read again (a login): a
    concurrent logoutall or deactivation either finished before it (is_active is then current)
    or waits for the login to commit (and then sees and revokes its token)."""
    return get_user_model().objects.select_for_update().get(pk=user.pk)


def token_cache_fill(key: str, user, expiry) -> None:
    """Cache a new token's entry (after its login commits): a token already known keeps working
    from an address past its failed-authentication limit (never over a tombstone)."""
    _fill(token_digest(key), user, expiry)


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
    address: str | None = None  # the client's, for the failure throttle
    confirmed: bool = False  # the database confirmed it in this request (token_claim)


def token_claim(request: HttpRequest) -> TokenClaim | None:
    """The token of the request's Token header (as knox reads it) and the user it claims to
    be, without a round trip when the token carries its user id or this process has seen it
    (confirm with token_confirm). None: no Token header. A token that resolves to no active
    user raises AuthenticationFailed (Throttled past the address's failure limit)."""
    address = client_ip(request)
    key = _key_from_header(request.META, address)
    if key is None:
        return None
    digest = token_digest(key)
    user_id = _claimed_id(key) or _HINTS.get(digest)
    if user_id is not None:
        return TokenClaim(key, digest, user_id, address)
    fields = entry_fields(store.token_get(digest))
    confirmed = fields is None
    if fields is None:
        user, _ = token_lookup(key, digest, address)
        fields = {f: getattr(user, f) for f in FIELDS}
    elif not fields.get("is_active"):
        raise exceptions.AuthenticationFailed(INACTIVE)
    _hint(digest, fields["id"])
    return TokenClaim(key, digest, fields["id"], address, confirmed)


def _claimed_id(key: str) -> int | None:
    head, dot, _ = key.partition(".")
    if not dot or not 0 < len(head) <= 15:
        return None
    try:
        return int(head, 16)
    except ValueError:
        return None


def _hint(digest: str, user_id: int) -> None:
    if len(_HINTS) >= MAX_HINTS:
        _HINTS.clear()
    _HINTS[digest] = user_id


def token_confirm(claim: TokenClaim, raw: bytes | None) -> bool:
    """Whether the token entry read in the same round trip as the rest of the request (None:
    not cached, or a tombstone) confirms the claim; without one, the database answers (one
    query: token_lookup, which raises AuthenticationFailed for a token that is no one's).
    False: the token is someone else's than it claims (the DRF view answers)."""
    fields = entry_fields(raw)
    if fields is not None:
        if fields["id"] == claim.user_id and fields.get("is_active"):
            return True
        _HINTS.pop(claim.digest, None)
        return False
    if claim.confirmed:
        return True
    user, _ = token_lookup(claim.key, claim.digest, claim.address)
    if user.pk != claim.user_id:
        _HINTS.pop(claim.digest, None)
        return False
    return True


def tokens_revoke(tokens) -> None:
    """Revoke these AuthToken rows (a queryset): their cache entries become tombstones first
    (store.TOMBSTONE: no request trusts or refills them), then the rows go, and the tombstones
    are written again after commit. When the token cache cannot be written this raises the
    store's error before anything is deleted (the API answers 503: nothing revoked)."""
    with transaction.atomic():
        # The owners' rows locked first: a login of theirs (token_login_lock) waits, so no
        # token is created between the list below and the deletes and survives a logoutall.
        owners = tokens.values("user_id")
        list(get_user_model().objects.select_for_update().filter(pk__in=owners).values("pk"))
        digests = list(tokens.values_list("digest", flat=True))
        store.token_tombstone([d[:40] for d in digests], TOMBSTONE_SECONDS)
        for row in tokens.filter(digest__in=digests):
            row.delete()  # (post_delete: feedsite.api.signals tombstones it once more)


def invalidate_digests(digests: list[str]) -> None:
    """Tombstone the cache entries of these knox digests (rows deleted or changed, their user
    changed) now and again after the current transaction commits: a request that read the row
    before the commit cannot cache it afterwards. Raises when Redis cannot write."""
    heads = [d[:40] for d in digests]
    if not heads:
        return
    store.token_tombstone(heads, TOMBSTONE_SECONDS)
    transaction.on_commit(lambda: _tombstone_quietly(heads), robust=True)


def _tombstone_quietly(heads: list[str]) -> None:
    try:
        store.token_tombstone(heads, TOMBSTONE_SECONDS)
    except store.STORE_ERRORS as exc:  # the first tombstone stands (a refill cannot replace it)
        if not store.store_unavailable(exc):
            raise


def invalidate_user_tokens(user_id: int) -> None:
    invalidate_digests(
        list(AuthToken.objects.filter(user_id=user_id).values_list("digest", flat=True))
    )


def token_user(key: str):
    """The active user a token belongs to, or None (revoked, expired, changed, inactive): for
    endpoints outside DRF (the SSE stream) and their re-checks. One Redis GET when the entry is
    cached; otherwise (no entry, a tombstone) one indexed query. Not throttled per address."""
    try:
        user, _ = authenticate_key(key)
    except exceptions.AuthenticationFailed:
        return None
    return user


def header_user(meta: dict, address: str) -> tuple[str | None, object | None]:
    """For endpoints outside DRF (the SSE stream's connect): (the token of ``meta``'s Token
    header: None without one, "" when malformed; its active user or None), with the
    failed-authentication throttle of ``address`` as CachedTokenAuthentication applies it: a
    malformed header or a token that does not authenticate counts against the address, and
    past the limit a token the cache does not confirm raises Throttled before any query."""
    try:
        key = _key_from_header(meta, address)
    except exceptions.AuthenticationFailed:
        return "", None
    if key is None:
        return None, None
    try:
        user, _ = authenticate_key(key, address)
    except exceptions.AuthenticationFailed:
        return key, None
    return key, user


def claimed_user_id(key: str) -> int | None:
    """The user id a token string carries in front (token_create), unconfirmed. Pure."""
    return _claimed_id(key)


def entry_user(raw: bytes | None, user_id: int):
    """The active user ``user_id`` when the token cache entry ``raw`` (read by the caller, for
    a token claiming that user) confirms it; None when the entry does not decide it (missing,
    a tombstone, another user's, inactive): the caller asks header_user, which goes to the
    database and counts failures."""
    fields = entry_fields(raw)
    if fields is None or fields["id"] != user_id or not fields.get("is_active"):
        return None
    return _user_from_fields(fields)


def token_still_valid(key: str, user_id: int) -> bool:
    """Whether ``key`` still authenticates ``user_id`` (an open stream's re-check): token_user's
    cost, a GET when cached."""
    user = token_user(key)
    return user is not None and user.pk == user_id
