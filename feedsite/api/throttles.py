"""Throttles of the account and write endpoints: fixed windows counted in Redis in one round
trip (feeds.store.hit_window: the window's number is in the key, so a key that lost its expiry
cannot lock anyone out), failing open when Redis is down (publishing must still work). Rates per
scope come from settings (FEEDSITE_THROTTLE_RATES, FEEDSITE_THROTTLE_<SCOPE> overrides each);
the 429 carries Retry-After. The client's address is REMOTE_ADDR, set from trusted proxies only
(feedsite.middleware). The feed read's own throttle lives with the feed (feeds.throttles)."""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import Throttled
from rest_framework.throttling import BaseThrottle

from feeds import store


def parse_rate(rate: str) -> tuple[int, int]:
    """ "1200/min" -> (1200, 60): requests per window of seconds (DRF's rate syntax)."""
    num, period = rate.split("/")
    return int(num), {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]


class WindowThrottle(BaseThrottle):
    scope = ""
    left = 0

    def ident(self, request, view) -> str | None:
        """The bucket; None: not throttled."""
        raise NotImplementedError

    def allow_request(self, request, view, amount: int = 1) -> bool:
        ident = self.ident(request, view)
        if ident is None:
            return True
        limit, window = parse_rate(settings.FEEDSITE_THROTTLE_RATES[self.scope])
        try:
            hits, self.left = store.hit_window(self.scope, ident, window, amount)
        except store.TRANSIENT_ERRORS:
            return True  # Redis down: fail open
        return hits <= limit

    def wait(self) -> float:
        return float(self.left)


class RegisterThrottle(WindowThrottle):
    """Per client address."""

    scope = "register"

    def ident(self, request, view) -> str:
        return self.get_ident(request)


class LoginThrottle(WindowThrottle):
    """Per (client address, username): guessing one account's password is slow, other users
    are unaffected. The admin's and the browsable API's login forms count in the same bucket
    (feedsite.middleware)."""

    scope = "login"

    def ident(self, request, view) -> str:
        data = request.data if hasattr(request.data, "get") else {}
        return f"{self.get_ident(request)}:{str(data.get('username', ''))[:150]}"


class WriteThrottle(WindowThrottle):
    """Per user, on every method that changes something (publish, delete, follow, unfollow)."""

    scope = "write"

    def ident(self, request, view) -> str | None:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        user_id = request.user.pk if request.user.is_authenticated else None
        return f"u:{user_id}" if user_id is not None else f"ip:{self.get_ident(request)}"


def charge_writes(request, view, amount: int) -> None:
    """Count ``amount`` more writes against the caller (a publish that notifies N users costs
    N more); a 429 when that goes past the rate. Nothing is written before this passes."""
    throttle = WriteThrottle()
    if amount > 0 and not throttle.allow_request(request, view, amount):
        raise Throttled(throttle.wait())
