"""Bugs are not outages. The feed store unavailable (Redis unreachable, or a reply that passes
with time: LOADING, READONLY, OOM, CLUSTERDOWN, ...) is a JSON 503 with Retry-After; any other
Redis error (WRONGTYPE, a Lua error) is a bug: a logged 500, on the DRF view and on the lean
feed lane alike. Real Redis and PostgreSQL; "unreachable" is a port nobody listens on."""

from __future__ import annotations

import logging

import pytest
import redis
from redis._parsers.base import BaseParser

from feeds import store
from feeds.store import connection
from feedsite.embedded import free_port
from tests.conftest import activate, make_token
from tests.factories import UserFactory

FEED = "/api/feed/"


@pytest.mark.parametrize(
    "reply",
    [
        "LOADING Redis is loading the dataset in memory",
        "READONLY You can't write against a read only replica.",
        "OOM command not allowed when used memory > 'maxmemory'.",
        "CLUSTERDOWN The cluster is down",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "MOVED 3999 127.0.0.1:6381",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    ],
)
def test_replies_that_mean_the_store_is_unavailable(reply):
    assert store.store_unavailable(BaseParser.parse_error(reply))


@pytest.mark.parametrize(
    "reply",
    [
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "ERR user_script:3: Script attempted to access nonexistent global variable 'x'",
        "ERR wrong number of arguments for 'zadd' command",
        "NOSCRIPT No matching script. Please use EVAL.",
        "CROSSSLOT Keys in request don't hash to the same slot",
    ],
)
def test_replies_that_are_bugs(reply):
    assert not store.store_unavailable(BaseParser.parse_error(reply))


def test_connection_errors_and_timeouts_are_unavailable():
    for exc in (
        redis.exceptions.ConnectionError("refused"),
        redis.exceptions.TimeoutError("slow"),
        redis.exceptions.RedisClusterException("Redis Cluster cannot be connected. Please ..."),
    ):
        assert store.store_unavailable(exc), exc
    assert not store.store_unavailable(redis.exceptions.RedisClusterException("Invalid args"))
    assert not store.store_unavailable(ValueError("not Redis"))
    # A wrong password never passes with time: a logged 500, not an endless 503.
    assert not store.store_unavailable(redis.exceptions.AuthenticationError("invalid password"))


@pytest.fixture
def lane(wsgi_get):
    """GET /api/feed/ through the lean lane as feedsite.wsgi serves it (conftest)."""
    return lambda token: wsgi_get("/api/feed/", f"Token {token}")


def _reader_with_a_broken_feed():
    user = UserFactory()
    activate(user)
    # A bug's footprint: the reader's feed key holds a string where a sorted set belongs.
    store.client().delete(store.feed_key(user.pk))
    store.client().set(store.feed_key(user.pk), "not a sorted set")
    return user, make_token(user)


@pytest.mark.django_db
def test_a_wrongtype_on_the_feed_read_is_a_logged_500_not_a_503(api, caplog):
    user, token = _reader_with_a_broken_feed()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    api.raise_request_exception = False
    with caplog.at_level(logging.ERROR, logger="django.request"):
        res = api.get(FEED, {"format": "json"})  # the DRF view, not the lane
    assert res.status_code == 500
    assert "Retry-After" not in res
    errors = [r for r in caplog.records if r.name == "django.request"]
    assert errors and "WRONGTYPE" in str(errors[-1].exc_info[1])


@pytest.mark.django_db
def test_a_wrongtype_on_the_lean_feed_lane_is_a_logged_500_not_a_503(lane, caplog):
    user, token = _reader_with_a_broken_feed()
    with caplog.at_level(logging.ERROR, logger="django.request"):
        status, headers, _ = lane(token)
    assert status == 500
    assert "Retry-After" not in headers
    errors = [r for r in caplog.records if r.name == "django.request"]
    assert errors and "WRONGTYPE" in str(errors[-1].exc_info[1])


@pytest.fixture
def redis_unreachable(monkeypatch):
    """The store's client pointed at a loopback port nobody listens on (connection refused)."""
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    monkeypatch.setattr(connection, "_client", dead)
    yield
    dead.close()


@pytest.mark.django_db
def test_redis_unreachable_is_a_503_with_retry_after_on_the_view_and_the_lane(
    api, lane, redis_unreachable
):
    user = UserFactory()
    token = make_token(user)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    res = api.get(FEED, {"format": "json"})
    assert res.status_code == 503, res.content
    assert int(res["Retry-After"]) > 0 and res.json()["code"] == "unavailable"
    status, headers, body = lane(token)
    assert status == 503, body
    assert int(headers["Retry-After"]) > 0 and b"unavailable" in body


@pytest.mark.django_db
def test_with_redis_unreachable_writes_still_pass_their_throttle(api, redis_unreachable):
    """The throttles fail open on an unavailable store (publishing must still work)."""
    user = UserFactory()
    api.credentials(HTTP_AUTHORIZATION=f"Token {make_token(user)}")
    res = api.post(
        "/api/activities/",
        {"verb": "starred", "object_type": "project", "object_id": "down"},
        format="json",
    )
    assert res.status_code == 201, res.content
