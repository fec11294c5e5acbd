"""FeedSettings snapshot, cached for a few seconds so an admin change lands without a restart."""

from __future__ import annotations

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


def get_conf() -> FeedConf:
    cached = cache.get(CACHE_KEY)
    if cached is not None:
        return FeedConf(**cached)
    row, _ = FeedSettings.objects.get_or_create(pk=1)
    conf = _from_row(row)
    cache.set(CACHE_KEY, asdict(conf), settings.FEEDSITE_SETTINGS_CACHE_SECONDS)
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
    cache.delete(CACHE_KEY)
    if new_threshold > old_threshold:
        from django.db import transaction

        from .tasks import threshold_changed_task

        transaction.on_commit(
            lambda: threshold_changed_task.delay(old_threshold, new_threshold), robust=True
        )


def invalidate_conf() -> None:
    cache.delete(CACHE_KEY)
