"""URLs of the read benchmark's server: the project's, plus the server floor (a trivial Django
view returning a static 20-item JSON body through the whole middleware stack). The SQL
comparison is a lane of bench/wsgi_sql.py. Loaded through FEEDSITE_URLCONF by bench/read.py."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import include, path

FLOOR_BODY = (
    b'{"items":['
    + b",".join(
        [b'{"id":"869142112608521","verb":"starred","object_id":"proj-1","actor_count":1}'] * 20
    )
    + b'],"next_cursor":null}'
)


def floor_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(FLOOR_BODY, content_type="application/json")


urlpatterns = [
    path("bench/floor/", floor_view),
    path("", include("feedsite.urls")),
]
