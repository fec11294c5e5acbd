"""Query parameters shared by every paged endpoint: ``limit`` here, ``cursor`` in
feedsite.api.cursor."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter

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
