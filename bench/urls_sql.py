"""The bench's comparison: fan-out on read in SQL, served by the same stack (auth, throttle, DRF,
uvicorn) as /api/feed/. Loaded only by bench/read.py through FEEDSITE_URLCONF."""

from __future__ import annotations

from django.db import connection
from django.urls import include, path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from activities.selectors import activities_by_ids, activity_to_dict
from feedsite.api.params import parse_limit
from feedsite.api.throttles import FeedReadThrottle

# Newest `limit` activities of everyone the reader follows, as well as SQL allows: one index-only
# probe of (actor_id, id DESC) per followee via LATERAL, a top-N merge, then bodies by primary key.
LATERAL_SQL = """
SELECT a.id FROM follows_follow f
CROSS JOIN LATERAL (
    SELECT id FROM activities_activity WHERE actor_id = f.followee_id ORDER BY id DESC LIMIT %s
) a
WHERE f.follower_id = %s ORDER BY a.id DESC LIMIT %s
"""
PLAIN_SQL = """
SELECT id FROM activities_activity WHERE actor_id IN
  (SELECT followee_id FROM follows_follow WHERE follower_id = %s) ORDER BY id DESC LIMIT %s
"""


class SqlFeedApi(APIView):
    throttle_classes = [FeedReadThrottle]

    def get(self, request: Request) -> Response:
        limit = parse_limit(request.query_params.get("limit"))
        with connection.cursor() as cur:
            if connection.vendor == "postgresql":
                cur.execute(LATERAL_SQL, [limit, request.user.pk, limit])
            else:
                cur.execute(PLAIN_SQL, [request.user.pk, limit])
            ids = [row[0] for row in cur.fetchall()]
        rows = activities_by_ids(ids)
        return Response({"items": [activity_to_dict(rows[i]) for i in ids if i in rows]})


urlpatterns = [
    path("bench/feed-sql/", SqlFeedApi.as_view()),
    path("", include("feedsite.urls")),
]
