"""The feed read's throttle: per token (or user, or address), a fixed window counted in Redis
in one round trip (DRF's sliding log costs a read and a write of a pickled list on every feed
read). The lean feed read (feeds.views) counts the same window inside its first round trip."""

from __future__ import annotations

from django.conf import settings
from knox.models import AuthToken
from rest_framework.throttling import BaseThrottle

from feedsite.api.auth import token_digest
from feedsite.api.throttles import parse_rate

from . import store


def count_window(scope: str, ident: str, window: int, amount: int = 1) -> tuple[int, int] | None:
    """Every throttle's counter (settings.FEEDSITE_THROTTLE_COUNTER names it for
    feedsite.api.throttles): store.hit_window, or None when the store is unavailable (throttles
    fail open). Any other Redis error is a bug and raises (a logged 500)."""
    try:
        return store.hit_window(scope, ident, window, amount)
    except store.STORE_ERRORS as exc:
        if not store.store_unavailable(exc):
            raise
        return None


class FeedReadThrottle(BaseThrottle):
    scope = "feed"
    rate: str = settings.FEEDSITE_THROTTLE_RATES[scope]

    @staticmethod
    def token_ident(digest: str) -> str:
        return f"t:{digest}"

    def allow_request(self, request, view) -> bool:
        limit, window = parse_rate(self.rate)
        if isinstance(request.auth, str):  # the same bucket as the lean read's
            ident = self.token_ident(token_digest(request.auth))
        elif isinstance(request.auth, AuthToken):  # (token_digest is the head of knox's)
            ident = self.token_ident(request.auth.digest[:40])
        elif request.user.is_authenticated:
            ident = f"u:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        counted = count_window(self.scope, ident, window)
        if counted is None:
            return True  # Redis unavailable: fail open (the read itself answers 503)
        hits, self.left = counted
        return hits <= limit

    def wait(self) -> float:
        return float(self.left)
