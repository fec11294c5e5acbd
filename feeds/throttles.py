"""The feed read's throttle: per user (all of a user's tokens together; an anonymous request per
address), a fixed window counted in Redis in one round trip (DRF's sliding log costs a read and
a write of a pickled list on every feed read). The lean feed read (feeds.views) counts the same
window inside its first round trip, once Redis has confirmed the token is that user's."""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import BaseThrottle

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
    def user_ident(user_id: int) -> str:
        """The bucket of a user: every token of theirs, the lane and the DRF view alike."""
        return f"u:{user_id}"

    def allow_request(self, request, view) -> bool:
        limit, window = parse_rate(self.rate)
        if request.user.is_authenticated:
            ident = self.user_ident(request.user.pk)
        else:
            ident = f"ip:{self.get_ident(request)}"
        counted = count_window(self.scope, ident, window)
        if counted is None:
            return True  # Redis unavailable: fail open (the read itself answers 503)
        hits, self.left = counted
        return hits <= limit

    def wait(self) -> float:
        return float(self.left)
