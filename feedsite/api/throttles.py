"""Throttles (state in the shared Redis cache). Rates come from the environment."""

from __future__ import annotations

import os

from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle


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


class FeedReadThrottle(UserRateThrottle):
    scope = "feed"
    rate = _rate("feed", "1200/min")
