"""What the checker (feeds.consistency, `manage.py verify_feeds`) asks of Redis besides the
feeds' own reads: whether a feed or a timeline exists (a missing one is rebuilt on the next read
that needs it, so there is nothing to check)."""

from __future__ import annotations

from .connection import client
from .keys import feed_key, timeline_key


def feed_exists(user_id: int) -> bool:
    """True when the user's home feed is built (it holds at least its built marker)."""
    return bool(client().exists(feed_key(user_id)))


def timeline_exists(author_id: int) -> bool:
    """True when the author's timeline is built (an empty built one holds its marker)."""
    return bool(client().exists(timeline_key(author_id)))
