from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse

from feeds import store
from feedsite.celery import app


def _check(fn) -> str:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - any failure means "down", reported by name
        return f"down: {type(exc).__name__}"
    return "ok"


def _db() -> None:
    with connection.cursor() as cur:
        cur.execute("SELECT 1")


def _broker() -> None:
    # One quick retry, no back-off: a health check must answer within a prober's timeout (a
    # broker that is down made this take over 2 s).
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.1, timeout=1)


def healthz(request: HttpRequest) -> JsonResponse:
    """200 when PostgreSQL (or SQLite), Redis and the broker answer; 503 naming what is down."""
    parts = {"database": _check(_db), "redis": _check(store.ping), "broker": _check(_broker)}
    ok = all(v == "ok" for v in parts.values())
    return JsonResponse(parts, status=200 if ok else 503)
