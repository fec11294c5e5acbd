"""The browsable API with a way to the next page: a page's `Link: <...>; rel="next"` header
(feedsite.api.params.next_page_link) becomes a button above the response. The JSON body is
untouched."""

from __future__ import annotations

import re
from typing import Any

from rest_framework.renderers import BrowsableAPIRenderer

_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


def next_link(header: str | None) -> str | None:
    """The rel="next" target of an RFC 8288 Link header, if any. Pure."""
    match = _NEXT.search(header or "")
    return match.group(1) if match else None


class PagedBrowsableAPIRenderer(BrowsableAPIRenderer):
    template = "rest_framework/api.html"

    def get_context(self, data: Any, accepted_media_type: str, renderer_context: dict) -> dict:
        context = super().get_context(data, accepted_media_type, renderer_context)
        response = renderer_context["response"]
        context["next_page_url"] = next_link(response.headers.get("Link"))
        return context
