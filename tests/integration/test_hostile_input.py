"""Hostile request bodies and ids: a JSON 4xx naming what is wrong, never a 500, nothing saved,
the same on SQLite and PostgreSQL (the refusals happen before the database)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activities.models import Activity
from feedsite.api.parsers import json_problem
from tests.conftest import auth_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
STAR = '"verb": "starred", "object_type": "project", "object_id": "p-1"'


def body(metadata: str) -> str:
    """An otherwise valid activity whose metadata is the raw JSON text ``metadata``."""
    return "{" + STAR + ', "metadata": ' + metadata + "}"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (body('{"a": "x\\u0000y"}'), "nul"),
        (body('{"a\\u0000": 1}'), "nul"),
        (body('{"a": "\\ud800"}'), "surrogate"),
        (body('{"a": 1e999}'), "infinity"),
        (body('{"a": NaN}'), "json parse error"),
        (body('{"a": 9007199254740993}'), "2^53"),
        (body('{"a": [-9007199254740993]}'), "2^53"),
        (body('{"a": 18446744073709551616}'), "2^53"),
        (body("[" * 40 + "]" * 40), "nested deeper"),
        ('{"verb": "starred", "object_type": "project", "object_id": "p\\u0000"}', "object_id"),
        ("[" * 5000 + "]" * 5000, "json parse error"),
    ],
)
def test_bodies_postgresql_cannot_store_are_400_naming_the_problem(raw, needle):
    res = auth_client(UserFactory()).post(
        "/api/activities/", data=raw, content_type="application/json"
    )
    assert res.status_code == 400, res.content[:300]
    assert needle in str(res.json()).lower(), res.json()
    assert Activity.objects.count() == 0


def test_a_deeply_nested_login_body_is_400_not_500(api):
    res = api.post("/api/auth/token/", data="[" * 5000, content_type="application/json")
    assert res.status_code == 400 and "json" in res.json()["detail"].lower()


def test_a_body_over_the_cap_is_413_before_it_is_read():
    client = auth_client(UserFactory())
    big = "{" + STAR + ', "object_title": "' + "x" * 70_000 + '"}'
    res = client.post("/api/activities/", data=big, content_type="application/json")
    assert res.status_code == 413, res.content[:300]
    assert "over" in res.json()["detail"]
    assert Activity.objects.count() == 0


@pytest.mark.parametrize(
    "path",
    ["/api/users/9223372036854775808/", "/api/users/99999999999999999999999/follow/"],
)
def test_user_ids_beyond_a_bigint_are_400_naming_the_field(path):
    res = auth_client(UserFactory()).get(path)
    assert res.status_code in (400, 405), res.content[:300]
    if res.status_code == 400:
        assert "user_id" in res.json()


def test_activity_ids_beyond_a_bigint_are_400_naming_the_field():
    client = auth_client(UserFactory())
    for method in (client.get, client.delete):
        res = method("/api/activities/18446744073709551616/")
        assert res.status_code == 400 and "activity_id" in res.json(), res.content[:300]


def _unstorable(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    return False


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(JSON, st.integers(1, 6))
def test_json_problem_refuses_exactly_the_deep_and_the_unstorable(value, limit):
    """Pure: refused iff nested deeper than the limit or holding NUL or a surrogate."""
    problem = json_problem(value, limit)
    assert (problem is not None) == (_depth(value) > limit or _unstorable(value)), problem
