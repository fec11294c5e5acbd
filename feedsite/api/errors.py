"""One exception handler: domain errors become 4xx with a message, DRF errors keep theirs; the
feed store or the database unavailable is a 503 with Retry-After. A Redis error that is a bug
(WRONGTYPE, a Lua error: feeds.store.errors) is no outage: it goes on to Django's logged 500."""

from __future__ import annotations

import logging
from typing import Any

from django import db
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from feeds.store import store_unavailable
from feedsite.errors import DomainError

log = logging.getLogger("feeds.api")


def domain_error_body(exc: DomainError) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": exc.message, "code": exc.code}
    if exc.field:
        body[exc.field] = [exc.message]
    return body


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(domain_error_body(exc), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response(detail, status=status.HTTP_400_BAD_REQUEST)
    if store_unavailable(exc):
        log.warning("Redis unavailable: %r", exc)
        return store_unavailable_response()
    if isinstance(exc, DATABASE_DOWN):
        log.warning("database unavailable: %s", exc)
        return Response(
            DATABASE_UNAVAILABLE,
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return drf_exception_handler(exc, context)


RETRY_AFTER_SECONDS = 5
# Redis (the feed store) cannot serve now (feeds.store.store_unavailable): a JSON 503 with
# Retry-After, never a 500.
STORE_UNAVAILABLE = {
    "detail": "the feed store is unavailable; retry shortly",
    "code": "unavailable",
}


# PostgreSQL cannot be reached (down, failing over, the pool timed out): a JSON 503. The
# request's transaction was rolled back, and Redis is written only after commit: nothing is
# half-written.
DATABASE_DOWN = (db.OperationalError, db.InterfaceError)
DATABASE_UNAVAILABLE = {
    "detail": "the database is unavailable; retry shortly",
    "code": "unavailable",
}


def store_unavailable_response() -> Response:
    """The JSON 503 of the feed store being unavailable."""
    return Response(
        STORE_UNAVAILABLE,
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def not_found(request, exception=None):
    """handler404: under /api/ a JSON 404 like every other API error (a path that matches no
    route, e.g. a negative id); Django's page elsewhere."""
    from django.http import JsonResponse
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "not found", "code": "not_found"}, status=404)
    return page_not_found(request, exception)
