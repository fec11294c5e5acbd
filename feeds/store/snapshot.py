"""The FeedSettings snapshot in Redis, through Django's cache framework (django-redis, prefix
``{p}:cache:{g}`` from settings.CACHES): every process reads it instead of PostgreSQL, a
change drops it. The cache ignores Redis errors (settings.CACHES' IGNORE_EXCEPTIONS): with
Redis down a read misses and the caller reads PostgreSQL."""

from __future__ import annotations

from typing import Any

from django.core.cache import cache

# The cache's key (it adds its own prefix); bumped when FeedConf gains a field.
SETTINGS_SNAPSHOT_KEY = "feeds:settings:v2"


def settings_snapshot_get() -> dict[str, Any] | None:
    """The cached FeedSettings fields, or None (never cached, expired, dropped, Redis down)."""
    return cache.get(SETTINGS_SNAPSHOT_KEY)


def settings_snapshot_set(fields: dict[str, Any], seconds: int) -> None:
    """Cache the FeedSettings fields for ``seconds``."""
    cache.set(SETTINGS_SNAPSHOT_KEY, fields, seconds)


def settings_snapshot_drop() -> None:
    """Drop the cached snapshot (a settings change): the next read loads the row."""
    cache.delete(SETTINGS_SNAPSHOT_KEY)
