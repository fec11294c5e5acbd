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
        try:
            hits, self.left = store.hit_window(self.scope, ident, window)
        except store.TRANSIENT_ERRORS:
            return True  # Redis down: fail open (the read itself answers 503)
        return hits <= limit

    def wait(self) -> float:
        return float(self.left)
