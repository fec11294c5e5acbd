"""The read benchmark's WSGI application: the project's, plus the SQL comparison as a second lane
of the very same lean read (token, throttle, paging, aggregation, hydration, cursor, JSON): only
the source of the ids differs. Fan-out on read in SQL, as well as SQL allows: one index range of
(actor_id, id DESC) per followee via LATERAL, merged in Python exactly as the Redis script merges
the feed and the timelines."""

from __future__ import annotations

from feedsite.wsgi import FEED_PATH, lane_application  # first: it sets Django up

# isort: split
from dataclasses import dataclass
from functools import partial

from django.db import connection

from feeds import store
from feeds.merge import merge_to_floor
from feeds.views import lean_feed_read

SQL_FEED_PATH = "/bench/feed-sql/"
NEWEST_PER_AUTHOR = """
SELECT f.actor_id, a.id
FROM (SELECT followee_id AS actor_id FROM follows_follow WHERE follower_id = %(user)s
      UNION ALL SELECT %(user)s) f
CROSS JOIN LATERAL (
    SELECT id FROM activities_activity
    WHERE actor_id = f.actor_id AND id <= %(hi)s ORDER BY id DESC LIMIT %(count)s
) a
"""
IN_RANGE = """
SELECT DISTINCT id FROM activities_activity
WHERE actor_id IN (SELECT followee_id FROM follows_follow WHERE follower_id = %(user)s
                   UNION ALL SELECT %(user)s)
  AND id BETWEEN %(lo)s AND %(hi)s
ORDER BY id DESC
"""
MAX_ID = 2**53


@dataclass(frozen=True)
class SqlSource:
    user_id: int

    def read(
        self, *, max_id: int | None, count: int, nbodies: int, shown: tuple[int, int] | None
    ) -> store.PageRead:
        params = {"user": self.user_id, "hi": MAX_ID if max_id is None else max_id, "count": count}
        streams: dict[int, list[int]] = {}
        with connection.cursor() as cur:
            cur.execute(NEWEST_PER_AUTHOR, params)
            for actor_id, aid in cur.fetchall():
                streams.setdefault(actor_id, []).append(aid)
            shown_ids: list[int] = []
            if shown is not None:
                cur.execute(IN_RANGE, {"user": self.user_id, "hi": shown[0], "lo": shown[1]})
                shown_ids = [row[0] for row in cur.fetchall()]
        ids, floor = merge_to_floor([sorted(s, reverse=True) for s in streams.values()], count)
        return store.PageRead(ids=ids, floor=floor, shown=shown_ids, bodies={})


application = lane_application(
    {FEED_PATH: lean_feed_read, SQL_FEED_PATH: partial(lean_feed_read, sources=SqlSource)}
)
