"""FeedSettings snapshot, cached for a few seconds so an admin change lands without a restart."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from django.conf import settings
from django.core.cache import cache

from .models import FeedSettings

CACHE_KEY = "feeds:settings:v1"


@dataclass(frozen=True)
class FeedConf:
    celebrity_threshold: int
    feed_max_length: int
    fanout_batch_size: int
    follow_backfill_count: int
    aggregation_window_seconds: int
    inactive_after_days: int


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
    cached = cache.get(CACHE_KEY)
    if cached is not None:
        conf = FeedConf(**cached)
    else:
        row, _ = FeedSettings.objects.get_or_create(pk=1)
        conf = _from_row(row)
        cache.set(CACHE_KEY, asdict(conf), settings.FEEDSITE_SETTINGS_CACHE_SECONDS)
    _local = (now + settings.FEEDSITE_SETTINGS_LOCAL_SECONDS, conf)
    return conf


def feed_settings_update(**values: int) -> FeedConf:
    """Change settings and drop the cached snapshot so every process sees them at once."""
    row, _ = FeedSettings.objects.get_or_create(pk=1)
    old_threshold = row.celebrity_threshold
    for name, value in values.items():
        if name not in FeedConf.__dataclass_fields__:
            raise ValueError(f"unknown feed setting {name!r}")
        setattr(row, name, value)
    row.full_clean()
    row.save()
    settings_changed(old_threshold=old_threshold, new_threshold=row.celebrity_threshold)
    return _from_row(row)


def settings_changed(*, old_threshold: int, new_threshold: int) -> None:
    """After a settings change (service or admin): every process sees it at once, and a raised
    threshold fans out again the recent activities of authors who are push authors now."""
    invalidate_conf()
    if new_threshold > old_threshold:
        from django.db import transaction

        from .tasks import threshold_changed_task

        transaction.on_commit(
            lambda: threshold_changed_task.delay(old_threshold, new_threshold), robust=True
        )


def invalidate_conf() -> None:
    global _local
    _local = None
    cache.delete(CACHE_KEY)
