"""Throttles (state in the shared Redis cache). Rates come from the environment."""

from __future__ import annotations

import os

from rest_framework.authtoken.models import Token
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle, UserRateThrottle


def _rate(name: str, default: str) -> str:
    return os.environ.get(f"FEEDSITE_THROTTLE_{name.upper()}", default)


class RegisterThrottle(SimpleRateThrottle):
    scope = "register"
    rate = _rate("register", "5/min")

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginThrottle(SimpleRateThrottle):
    """Per (IP, username): guessing one account's password is slow, other users are unaffected."""

    scope = "login"
    rate = _rate("login", "10/min")

    def get_cache_key(self, request, view) -> str:
        username = (
            str(request.data.get("username", ""))[:150] if hasattr(request.data, "get") else ""
        )
        return self.cache_format % {
            "scope": self.scope,
            "ident": f"{self.get_ident(request)}:{username}",
        }


class WriteThrottle(UserRateThrottle):
    scope = "write"
    rate = _rate("write", "120/min")

    def allow_request(self, request, view) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        return super().allow_request(request, view)


def parse_rate(rate: str) -> tuple[int, int]:
    """ "1200/min" -> (1200, 60): requests per window of seconds (DRF's rate syntax)."""
    num, period = rate.split("/")
    return int(num), {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]


class FeedReadThrottle(BaseThrottle):
    """Per user, a fixed window counted in Redis in one round trip (DRF's sliding log costs a
    read and a write of a pickled list on every feed read). The lean feed read counts the same
    window inside its first round trip (feeds.views)."""

    rate = _rate("feed", "1200/min")
    scope = "feed"

    @staticmethod
    def token_ident(digest: str) -> str:
        return f"t:{digest}"

    def allow_request(self, request, view) -> bool:
        from feeds import store
        from feedsite.api.auth import token_digest

        limit, window = parse_rate(self.rate)
        if isinstance(request.auth, str | Token):  # the same bucket as the lean read's
            key = request.auth if isinstance(request.auth, str) else request.auth.key
            ident = self.token_ident(token_digest(key))
        elif request.user.is_authenticated:
            ident = f"u:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        hits, self.left = store.hit_window(self.scope, ident, window)
        return hits <= limit

    def wait(self) -> float:
        return float(self.left)
