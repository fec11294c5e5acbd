"""Query parameters shared by every paged endpoint: ``limit`` here, ``cursor`` in
feedsite.api.cursor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from drf_spectacular.utils import OpenApiParameter
from rest_framework.response import Response

from feedsite.api.cursor import keyset_before, keyset_page
from feedsite.errors import InvalidInput

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

PAGE_PARAMS = [
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        description=f"1-{MAX_LIMIT}, default {DEFAULT_LIMIT}",
    ),
    OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
]


def parse_limit(raw: str | None, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"limit must be an integer from 1 to {maximum}", field="limit") from None
    if not 1 <= value <= maximum:
        raise InvalidInput(f"limit must be an integer from 1 to {maximum}", field="limit")
    return value


def next_page_link(request, next_cursor: str | None) -> dict[str, str]:
    """The `Link: <...>; rel="next"` header of a page (RFC 8288): the same URL with the next
    cursor. In the browsable API it is a link to click; the JSON body stays as it is."""
    if not next_cursor:
        return {}
    query = request.GET.copy()
    query["cursor"] = next_cursor
    return {"Link": f'<{request.build_absolute_uri(request.path)}?{query.urlencode()}>; rel="next"'}


def keyset_list(
    request, kind: str, fetch: Callable[[int | None, int], Sequence[Any]], render: Callable
) -> Response:
    """A keyset-paged list answer, newest first: ``fetch(before_id, n)`` reads up to n rows
    below the cursor's id, ``render(rows)`` makes the items; ``{"items", "next_cursor"}`` with
    the next page's Link header."""
    limit = parse_limit(request.query_params.get("limit"))
    before = keyset_before(kind, request.query_params.get("cursor"))
    rows, next_cursor = keyset_page(
        fetch(before, limit + 1), limit=limit, kind=kind, key=lambda row: row.id
    )
    return Response(
        {"items": render(rows), "next_cursor": next_cursor},
        headers=next_page_link(request, next_cursor),
    )
