"""Who a stream listens to: the reader's followees, the objects they follow and the reader, less
the authors they hide (muted, blocked either way; an object's activity by a hidden author is
dropped at delivery). Both lists are cached in Redis and read in a connect's one round
trip (feeds.store.followees, feeds.store.hidden); a miss is filled here from PostgreSQL."""

from __future__ import annotations

import logging

from django.conf import settings

from follows.selectors import followed_objects, followee_ids

from . import store
from .read import hidden_authors
from .store.followees import Source, followees_change, followees_fill, object_source

log = logging.getLogger(__name__)


def listened(user_id: int, followees: frozenset[Source], hidden: frozenset[int]) -> set[Source]:
    """The sources a stream of ``user_id`` hears: its followees and itself, less the hidden
    authors, and the objects it follows. Pure."""
    return (set(followees) | {user_id}) - hidden


def followees_now(user_id: int) -> list[Source]:
    """The followee ids and followed objects' names, from PostgreSQL."""
    objects = [object_source(t, i) for t, i in followed_objects(user_id=user_id)]
    return [*followee_ids(follower_id=user_id), *objects]


def followees_load(user_id: int, version: int) -> frozenset[Source]:
    """The followees from PostgreSQL, cached when no follow change came in since the list's
    "#v" read ``version`` (feeds.store.followees)."""
    ids = followees_now(user_id)
    try:
        followees_fill(user_id, version, ids, settings.FEEDSITE_FOLLOWEES_CACHE_SECONDS)
    except store.STORE_ERRORS as exc:
        if not store.store_unavailable(exc):
            raise
    return frozenset(ids)


def listened_load(
    user_id: int, followees: frozenset[Source] | None, version: int, hidden: frozenset[int] | None
) -> tuple[set[Source], frozenset[int]]:
    """(``listened``, the hidden authors) with whichever list the caches did not hold (None)
    read from PostgreSQL and cached."""
    if followees is None:
        followees = followees_load(user_id, version)
    if hidden is None:
        hidden = hidden_authors(user_id)
    return listened(user_id, followees, hidden), hidden


def listened_now(user_id: int) -> tuple[set[Source], frozenset[int]]:
    """(``listened``, the hidden authors) from PostgreSQL (a gateway that lost its subscription
    reloads every streaming user's: follows announced in the gap were lost too)."""
    hidden = hidden_authors(user_id)
    return listened(user_id, frozenset(followees_now(user_id)), hidden), hidden


def followees_changed(*, follower_id: int, followee_id: Source, following: bool) -> None:
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
