"""Throttles of the account and write endpoints (state in the shared Redis cache). Rates per
scope come from settings (REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]). The feed read's own
throttle lives with the feed (feeds.throttles)."""

from __future__ import annotations

from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle


class RegisterThrottle(SimpleRateThrottle):
    scope = "register"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginThrottle(SimpleRateThrottle):
    """Per (IP, username): guessing one account's password is slow, other users are unaffected."""

    scope = "login"

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

    def allow_request(self, request, view) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        return super().allow_request(request, view)


def parse_rate(rate: str) -> tuple[int, int]:
    """ "1200/min" -> (1200, 60): requests per window of seconds (DRF's rate syntax)."""
    num, period = rate.split("/")
    return int(num), {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]
