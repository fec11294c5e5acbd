"""Throttles (state in the shared Redis cache). Rates come from the environment."""

from __future__ import annotations

import os

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


class FeedReadThrottle(BaseThrottle):
    """Per user, a fixed one-minute window counted in Redis in one round trip (DRF's sliding
    log costs a read and a write of a pickled list on every feed read)."""

    rate = _rate("feed", "1200/min")

    def allow_request(self, request, view) -> bool:
        from feeds import store

        limit = int(self.rate.split("/")[0])
        ident = str(request.user.pk) if request.user.is_authenticated else self.get_ident(request)
        hits, self.left = store.hit_window("feed", ident, 60)
        return hits <= limit

    def wait(self) -> float:
        return float(self.left)
