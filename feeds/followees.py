"""Who a stream listens to: the reader's followees and the reader, less the authors they hide
(muted, blocked either way). Both lists are cached in Redis and read in a connect's one round
trip (feeds.store.followees, feeds.store.hidden); a miss is filled here from PostgreSQL."""

from __future__ import annotations

import logging

from django.conf import settings

from follows.selectors import followee_ids

from . import store
from .read import hidden_authors
from .store.followees import followees_change, followees_fill

log = logging.getLogger(__name__)


def listened(user_id: int, followees: frozenset[int], hidden: frozenset[int]) -> set[int]:
    """The authors a stream of ``user_id`` hears: its followees and itself, less the hidden.
    Pure."""
    return (set(followees) | {user_id}) - hidden


def followees_load(user_id: int, version: int) -> frozenset[int]:
    """The followee ids from PostgreSQL, cached when no follow change came in since the list's
    "#v" read ``version`` (feeds.store.followees)."""
    ids = followee_ids(follower_id=user_id)
    try:
        followees_fill(user_id, version, ids, settings.FEEDSITE_FOLLOWEES_CACHE_SECONDS)
    except store.STORE_ERRORS as exc:
        if not store.store_unavailable(exc):
            raise
    return frozenset(ids)


def listened_load(
    user_id: int, followees: frozenset[int] | None, version: int, hidden: frozenset[int] | None
) -> set[int]:
    """``listened`` with whichever list the caches did not hold (None) read from PostgreSQL
    and cached."""
    if followees is None:
        followees = followees_load(user_id, version)
    if hidden is None:
        hidden = hidden_authors(user_id)
    return listened(user_id, followees, hidden)


def followees_changed(*, follower_id: int, followee_id: int, following: bool) -> None:
    """A committed follow or unfollow, into the follower's cached list. When Redis cannot take
    it, the list is dropped at the next chance by its lifetime (logged)."""
    try:
        followees_change(
            follower_id, followee_id, following, settings.FEEDSITE_FOLLOWEES_CACHE_SECONDS
        )
    except store.STORE_ERRORS as exc:
        if not store.store_unavailable(exc):
            raise
        log.warning("followee list of %s not updated: Redis unavailable (%s)", follower_id, exc)
