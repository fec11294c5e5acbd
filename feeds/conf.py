"""FeedSettings snapshot, cached for a few seconds so an admin change lands without a restart.
Changing the settings is a service (feeds.services.feed_settings_update)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from django.conf import settings

from . import store
from .models import FeedSettings


@dataclass(frozen=True)
class FeedConf:
    celebrity_threshold: int
    feed_max_length: int
    fanout_batch_size: int
    follow_backfill_count: int
    aggregation_window_seconds: int
    inactive_after_days: int
    notification_window_seconds: int
    notification_max_length: int

    # The pull-author predicate, in one place: authors with at least `celebrity_threshold`
    # followers are not fanned out on write; their followers pull them at read time.
    def is_pull_author(self, followers: int) -> bool:
        return followers >= self.celebrity_threshold


def _from_row(row: FeedSettings) -> FeedConf:
    return FeedConf(**{f: getattr(row, f) for f in FeedConf.__dataclass_fields__})


# In-process copy for FEEDSITE_SETTINGS_LOCAL_SECONDS (1 s; 0 in tests): a feed read then costs
# no round trip for settings. Other processes see a change within that second plus the
# Redis-cached snapshot's lifetime, which the change itself drops.
_local: tuple[float, FeedConf] | None = None


def get_conf() -> FeedConf:
    global _local
    now = time.monotonic()
    if _local is not None and _local[0] > now:
        return _local[1]
    cached = store.settings_snapshot_get()
    if cached is not None:
        conf = FeedConf(**cached)
    else:
        row, _ = FeedSettings.objects.get_or_create(pk=1)
        conf = _from_row(row)
        store.settings_snapshot_set(asdict(conf), settings.FEEDSITE_SETTINGS_CACHE_SECONDS)
    _local = (now + settings.FEEDSITE_SETTINGS_LOCAL_SECONDS, conf)
    return conf


def invalidate_conf() -> None:
    global _local
    _local = None
    store.settings_snapshot_drop()


def is_pull_author(followers: int) -> bool:
    """The pull-author predicate under the current settings."""
    return get_conf().is_pull_author(followers)
