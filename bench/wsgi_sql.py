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
from dataclasses import dataclass

from django.db import connection
from django.http import HttpRequest, HttpResponse

from feeds import store
from feeds.selectors import home_activities_page
from feeds.views import lean_feed_read

SQL_FEED_PATH = "/bench/feed-sql/"
# A cursor's bucket ("shown", pages after the first): every id in it, as the Redis read takes
# the whole range; a feed holds at most feed_max_length (500 here), so this bound never cuts.
SHOWN_MAX = 5000

# The pool is made on the first connection (after this import): from then on it lends
# connections unchecked. The settings dict is shared by every thread's connection wrapper.
connection.settings_dict["CONN_HEALTH_CHECKS"] = False
# The query is prepared after 5 runs on a connection (planning: ~0.8 ms of a ~2 ms query), as
# feedsite/settings.py asks for every pooled connection (prepare_threshold).


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
    """GET /bench/feed-sql/: the very lean_feed_read of the Redis read (token, the one-round-trip
    prelude script stopped before the page, the per-user throttle, errors, paging, aggregation,
    JSON) with the page from PostgreSQL (see the module docstring)."""
    return lean_feed_read(request, sources=SqlSource)


application = lane_application({FEED_PATH: lean_feed_read, SQL_FEED_PATH: sql_feed_read})
