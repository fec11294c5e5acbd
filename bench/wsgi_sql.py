"""The read benchmark's WSGI application: the project's, plus its rival, fan-out on read in
PostgreSQL, as a second lane at /bench/feed-sql/ that pays what the Redis lane pays and no more.

Per request, the SQL lane does what lean_feed_read does on a warm read, with the page from
PostgreSQL instead of the feed store: the same one-round-trip prelude (store.read_warm's script:
token entry, throttle, pull-author list, hidden authors; told to stop before the page), then ONE
query (feeds.selectors.home_activities_page: each followee's newest rows by the (actor, -id)
index, hidden authors left out, merged and limited in SQL, each row's body built as the API's
JSON), then the same aggregation, cursor and JSON code (feeds.read.feed_page through
feeds.views._page). No body round trip to Redis, no merge in Python. The pool lends connections
without its health check (an empty query: one more PostgreSQL round trip per request), as the
Redis client lends its connections without a round trip, and the query is a prepared statement
(as the Redis read's script is loaded once and called by its hash)."""

from __future__ import annotations

from feedsite.wsgi import FEED_PATH, lane_application  # first: it sets Django up

# isort: split
import logging
from dataclasses import dataclass

from django.db import connection
from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions

from feeds import store
from feeds.conf import get_conf
from feeds.read import IdSource
from feeds.selectors import home_activities_page
from feeds.throttles import FeedReadThrottle
from feeds.views import _json, _page, _plain_json, lean_feed_read
from feedsite.api.auth import TokenClaim, token_claim, token_confirm
from feedsite.api.cursor import feed_cursor_decode
from feedsite.api.errors import (
    DATABASE_DOWN,
    DATABASE_UNAVAILABLE,
    RETRY_AFTER_SECONDS,
    STORE_UNAVAILABLE,
    domain_error_body,
)
from feedsite.api.params import next_page_link, parse_limit
from feedsite.api.throttles import parse_rate
from feedsite.errors import DomainError

SQL_FEED_PATH = "/bench/feed-sql/"
# A cursor's bucket ("shown", pages after the first): every id in it, as the Redis read takes
# the whole range; a feed holds at most feed_max_length (500 here), so this bound never cuts.
SHOWN_MAX = 5000
log = logging.getLogger("bench.wsgi_sql")

# The pool is made on the first connection (after this import): from then on it lends
# connections unchecked. The settings dict is shared by every thread's connection wrapper.
connection.settings_dict["CONN_HEALTH_CHECKS"] = False
# And prepares the query after 5 runs on a connection (planning: ~0.8 ms of a ~2 ms query).
# Django turns psycopg's preparation off unless OPTIONS names prepare_threshold, which
# feedsite/settings.py does not (its server_side_binding alone prepares nothing).
connection.settings_dict["OPTIONS"].setdefault("prepare_threshold", 5)


@dataclass
class SqlSource:
    """feed_page's source of ids and bodies: home_activities_page, one query per read (the
    first page: one read; a cursor adds the query of its bucket)."""

    user_id: int

    def read(
        self, *, max_id: int | None, count: int, nbodies: int, shown: tuple[int, int] | None
    ) -> store.PageRead:
        before = None if max_id is None else max_id + 1
        rows = home_activities_page(user_id=self.user_id, limit=count, before_id=before)
        # Raw JSON text as the body cache holds it: feed_page's hydrate parses each one once.
        bodies: dict = {row.id: row.body for row in rows}
        shown_ids: list[int] = []
        if shown is not None:
            ranged = home_activities_page(
                user_id=self.user_id, limit=SHOWN_MAX, before_id=shown[0] + 1, min_id=shown[1]
            )
            shown_ids = [row.id for row in ranged]
            bodies.update((row.id, row.body) for row in ranged)
        ids = [row.id for row in rows]
        # Exact to the last row: `count` rows means more may lie below the last one.
        floor = ids[-1] if len(ids) == count else None
        return store.PageRead(ids=ids, floor=floor, shown=shown_ids, bodies=bodies)


def sql_feed_read(request: HttpRequest) -> HttpResponse | None:
    """GET /bench/feed-sql/: lean_feed_read's warm path with the page from PostgreSQL (see the
    module docstring); None hands the request to the Django stack, as the Redis lane does."""
    if request.method != "GET" or "format" in request.GET:
        return None
    accept = request.META.get("HTTP_ACCEPT", "")
    if accept and not _plain_json(accept):
        return None
    claim = token_claim(request)
    if claim is None:
        return None
    try:
        return _sql_read(request, claim)
    except store.STORE_ERRORS as exc:
        if not store.store_unavailable(exc):
            raise  # a bug (WRONGTYPE, a Lua error): the lane's logged 500, as the Redis lane
        log.warning("sql feed read: the feed store is unavailable: %r", exc)
        return _json(STORE_UNAVAILABLE, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})
    except DATABASE_DOWN:
        return _json(DATABASE_UNAVAILABLE, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def _sql_read(request: HttpRequest, claim: TokenClaim) -> HttpResponse | None:
    conf = get_conf()
    limit, window = parse_rate(FeedReadThrottle.rate)
    throttle = (FeedReadThrottle.scope, FeedReadThrottle.token_ident(claim.digest), window)
    try:
        page_limit = parse_limit(request.GET.get("limit"))
        cursor = feed_cursor_decode(request.GET.get("cursor"))
        bad: DomainError | None = None
    except DomainError as exc:
        bad = exc
    # The Redis read's own prelude script, in its one round trip; max_sources=0 stops it before
    # the page (the page is PostgreSQL's here), so the read mark and page arguments are unused.
    pre = store.read_warm(
        digest=claim.digest,
        user_id=claim.user_id,
        throttle=throttle,
        hit_limit=limit,
        threshold=conf.celebrity_threshold,
        max_sources=0,
        max_id=None,
        count=1,
        nbodies=0,
        shown=None,
        mark_ttl=0,
    ).prelude
    if not token_confirm(claim, pre.token):
        return None
    if pre.hits > limit:
        response = _json({"detail": str(exceptions.Throttled(pre.window_left).detail)}, 429)
        response["Retry-After"] = str(pre.window_left)
        return response
    try:
        if bad is not None:
            raise bad
        source: IdSource = SqlSource(claim.user_id)
        # Hidden authors are left out by the query itself: nothing to filter here.
        page = _page(claim.user_id, page_limit, cursor, source, frozenset())
        return _json(page, 200, next_page_link(request, page["next_cursor"]))
    except DomainError as exc:
        return _json(domain_error_body(exc), exc.status_code)


application = lane_application({FEED_PATH: lean_feed_read, SQL_FEED_PATH: sql_feed_read})
