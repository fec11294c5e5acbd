"""OpenAPI extensions: how the schema describes our authentication."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema


class CachedTokenScheme(OpenApiAuthenticationExtension):
    target_class = "feedsite.api.auth.CachedTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "`Token <token>`, from POST /api/auth/token/ (expires; revoke with "
                "POST /api/auth/logout/ or /api/auth/logoutall/)"
            ),
        }


ERROR_SCHEMA = {
    "type": "object",
    "description": (
        "`detail` (and `code`) say what is wrong; a validation error names each field it "
        "refuses, with a list of messages"
    ),
    "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
    "additionalProperties": True,
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
ERRORS = {
    "400": "invalid input (the body, a parameter or an id), named in the answer",
    "401": "no token, or an unknown, expired or revoked one",
    "403": "not allowed for this user (e.g. someone else's activity)",
    "404": "no such user or activity",
    "429": "throttled: retry after Retry-After seconds",
    "503": "PostgreSQL or Redis unreachable: retry after Retry-After seconds",
}


# The live stream is served by the ASGI stream server (feeds.stream), not by a DRF view: stated
# here so that clients find it in the schema.
STREAM_OPERATION = {
    "operationId": "feed_stream",
    "summary": "Live feed: server-sent events",
    "description": (
        "Holds the connection open and sends `event: activity` (`data:` the feed item as "
        "JSON) for every new activity of the people the caller follows, `event: update` (the "
        "feed item with its new body) when one of them is edited, a comment line every "
        "FEEDSITE_SSE_HEARTBEAT_SECONDS, and `event: dropped` before closing a client too "
        "slow to keep up. Every event's `id:` is the stream's high-water activity id (never "
        "lowered by an older arrival): reconnecting with it as `Last-Event-ID` replays every "
        "activity the stream did not deliver, once, oldest first; past 1,000 it sends "
        "`event: reset` (`id:` the feed's newest id: reload the feed) instead. At most "
        "FEEDSITE_SSE_MAX_STREAMS streams per user (429) and "
        "FEEDSITE_SSE_MAX_STREAMS_PER_PROCESS per server process (503)."
    ),
    "tags": ["feed"],
    "security": [{"tokenAuth": []}, {"cookieAuth": []}],
    "responses": {
        "200": {
            "description": "the event stream",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
}


def add_error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: every operation states the errors it can answer
    (with the Retry-After of 429 and 503, and 413 where there is a body), so a client, and
    schemathesis, know every status the API may send."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    result.setdefault("paths", {})["/api/feed/stream/"] = {"get": STREAM_OPERATION}
    ref = {"$ref": "#/components/schemas/Error"}
    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            for param in operation.get("parameters", []):
                state_id_range(param)
            responses = operation.setdefault("responses", {})
            codes = dict(ERRORS)
            if "requestBody" in operation:
                codes["413"] = "the request body is over the size cap"
            for code, text in codes.items():
                if code in responses:
                    continue
                responses[code] = {
                    "description": text,
                    "content": {"application/json": {"schema": ref}},
                    **({"headers": RETRY_AFTER} if code in ("429", "503") else {}),
                }
    return result


MAX_ID = 2**63 - 1


def state_id_range(param: dict) -> None:
    """Ids in paths are bigints: say so (user ids are integers, activity ids digit strings)."""
    if param.get("in") != "path" or not param.get("name", "").endswith("_id"):
        return
    schema = param.setdefault("schema", {})
    if schema.get("type") == "integer":
        schema.update(minimum=0, maximum=MAX_ID, format="int64")
    elif schema.get("type") == "string":
        schema.update(pattern="^[0-9]{1,19}$")


class ObjectPageSchema(AutoSchema):
    """For viewsets whose `list` answers one object (a page with a cursor and counts, a
    profile), not an array: drf-spectacular assumes an array for every `list`."""

    def _is_list_view(self, serializer=None) -> bool:
        return False
