"""Throttles of the account and write endpoints: fixed windows counted in Redis in one round
trip, failing open when Redis is unavailable (publishing must still work). Rates per scope come
from settings (FEEDSITE_THROTTLE_RATES, FEEDSITE_THROTTLE_<SCOPE> overrides each); the 429
carries Retry-After. The client's address is REMOTE_ADDR, set from trusted proxies only
(feedsite.middleware). The feed read's own throttle lives with the feed (feeds.throttles).

The counter is named by settings.FEEDSITE_THROTTLE_COUNTER (feeds.throttles.count_window, on
feeds.store.hit_window: the window's number is in the key, so a key that lost its expiry cannot
lock anyone out) and loaded when a request is counted: the apps' views use these throttles and
import nothing of feeds, directly or through here."""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string
from rest_framework.exceptions import Throttled
from rest_framework.throttling import BaseThrottle


def parse_rate(rate: str) -> tuple[int, int]:
    """ "1200/min" -> (1200, 60): requests per window of seconds (DRF's rate syntax)."""
    num, period = rate.split("/")
    return int(num), {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]


def count_window(scope: str, ident: str, window: int, amount: int = 1) -> tuple[int, int] | None:
    """Count ``amount`` hits in the current ``window``-second window of (scope, ident): (hits so
    far, seconds left), or None when the counter is unavailable (the throttle fails open)."""
    return import_string(settings.FEEDSITE_THROTTLE_COUNTER)(scope, ident, window, amount)


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
        counted = count_window(self.scope, ident, window, amount)
        if counted is None:
            return True  # Redis unavailable: fail open
        hits, self.left = counted
        return hits <= limit

    def wait(self) -> float:
        return float(self.left)

    def get_ident(self, request) -> str:
        """The client's address bucket (REMOTE_ADDR, set from trusted proxies only; an IPv6
        address as its /64: feedsite.middleware.address_bucket)."""
        from feedsite.addresses import address_bucket

        return address_bucket(request.META.get("REMOTE_ADDR") or "")


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
