"""schemathesis over every operation of /api/schema/, authenticated, in process (the WSGI app,
the fast lane included): no server error, and every answer is one the schema states (status
code, content type, body). FEEDSITE_FUZZ_EXAMPLES cases per operation: a few in `make test`,
enough for 5,000+ in all in `make fuzz` (CI)."""

from __future__ import annotations

import collections
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import make_token
from tests.factories import UserFactory

EXAMPLES = int(os.environ.get("FEEDSITE_FUZZ_EXAMPLES", "15"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(db):
    """The app in process, as Django's test client calls it: without closing the test's
    database connection at the start and end of each request."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from feedsite.wsgi import application

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def world(db) -> dict:
    """The caller, another user, and activities of both: half the generated ids are swapped
    for these, so cases reach the code past "not found"."""
    from activities.services import activity_publish

    me, other = UserFactory(), UserFactory()
    ids = [
        str(
            activity_publish(actor_id=u.pk, data={"verb": "v", "object_type": "t", "object_id": o})[
                0
            ].id
        )
        for u in (me, other)
        for o in ("a", "b", "c")
    ]
    return {"me": me, "users": [me.pk, other.pk], "activities": ids}


def test_every_operation_answers_as_the_schema_says(api_schema, world):
    """One hypothesis run per operation (schemathesis' pytest plugin does not run on pytest 9);
    every operation's failures are collected, then reported together."""
    token = make_token(world["me"])
    failures: dict[str, str] = {}
    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    cases = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/api/feed/stream/":
            continue  # the ASGI stream server's (tests/integration/test_stream.py)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy())
        def run(case) -> None:
            nonlocal cases
            cases += 1
            params = case.path_parameters or {}
            pick = cases % 4  # ids: real ones half the time, generated ones otherwise
            if "user_id" in params and pick < 2:
                params["user_id"] = world["users"][pick]
            if "activity_id" in params and pick < 2:
                params["activity_id"] = world["activities"][cases % len(world["activities"])]
            # Logging out revokes tokens: those cases spend a user of their own.
            revokes = case.operation.path.startswith("/api/auth/logout")
            own = make_token(UserFactory()) if revokes else token
            response = case.call_and_validate(
                headers={"Authorization": f"Token {own}"}, checks=CHECKS
            )
            statuses[case.operation.label][response.status_code] += 1

        try:
            run()
        except BaseException as exc:  # noqa: BLE001 - (failure groups) reported below
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    print(f"schemathesis: {cases} cases")
    for label, counts in sorted(statuses.items()):
        print(f"  {label:45} " + " ".join(f"{k}:{v}" for k, v in sorted(counts.items())))
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())
