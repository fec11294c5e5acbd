"""Throttles that hold. Failed token authentications are counted per client address: past
FEEDSITE_THROTTLE_AUTH_FAIL, a token the cache does not confirm is a 429 with Retry-After before
any query, while tokens already known keep working; a forged `<id hex>.<secret>` costs one
query at most and spends nothing of the user it names. The feed and write throttles count per
user, all of a user's tokens together. The lean lane's errors are the API's: JSON, never
Django's HTML. Real PostgreSQL and Redis; the lane as feedsite.wsgi serves it."""

from __future__ import annotations

import time

import pytest
import redis
from rest_framework.test import APIClient

from feeds import store
from feeds.store import connection
from feeds.throttles import FeedReadThrottle
from feedsite.api.auth import new_token_key
from feedsite.embedded import free_port
from tests.conftest import make_token
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
STAR = {"verb": "starred", "object_type": "project", "object_id": "p-1"}


@pytest.fixture
def wsgi(wsgi_get):
    """GET through feedsite.wsgi.application with a token, from ``address`` (conftest)."""
    return lambda path, token, address="127.0.0.1": wsgi_get(path, f"Token {token}", address)


def drf(path: str, token: str, address: str = "127.0.0.1"):
    return APIClient().get(path, HTTP_AUTHORIZATION=f"Token {token}", REMOTE_ADDR=address)


@pytest.fixture
def five_failures(settings):
    settings.FEEDSITE_THROTTLE_RATES = {**settings.FEEDSITE_THROTTLE_RATES, "auth_fail": "5/min"}


def test_forged_tokens_past_the_address_limit_are_429_without_a_query_known_tokens_work(
    wsgi, five_failures, django_assert_num_queries
):
    victim, bystander = UserFactory(), UserFactory()
    known = make_token(victim)
    assert wsgi("/api/feed/", known)[0] == 200  # in the token cache now
    late = make_token(bystander)  # a good token the cache has not seen yet
    for i in range(5):  # the victim's id in front, a made-up secret: one lookup, one query
        with django_assert_num_queries(1):
            if i % 2:
                status, headers, body = wsgi("/api/feed/", new_token_key(victim.pk))
            else:
                res = drf(f"/api/users/{victim.pk}/", new_token_key(victim.pk))
                status, headers, body = res.status_code, res, res.content
        assert status == 401 and b"Invalid token" in body
        assert headers["WWW-Authenticate"] == "Token"
    for forged in (new_token_key(victim.pk), "not-even-a-token", late):
        with django_assert_num_queries(0):
            status, headers, body = wsgi("/api/feed/", forged)
            res = drf(f"/api/users/{victim.pk}/", forged)
        for code, retry, ctype in (
            (status, headers["Retry-After"], headers["Content-Type"]),
            (res.status_code, res["Retry-After"], res["Content-Type"]),
        ):
            assert code == 429 and 0 < int(retry) <= 60 and ctype == "application/json"
        assert b"throttled" in body
    # One attacker behind a shared address locks out no one the cache already knows.
    with django_assert_num_queries(0):
        assert wsgi("/api/feed/", known)[0] == 200
    with django_assert_num_queries(1):  # the view's own: the user it shows
        assert drf(f"/api/users/{victim.pk}/", known).status_code == 200
    # Another address has its own count; the victim's feed budget was never spent.
    assert wsgi("/api/feed/", late, address="198.51.100.7")[0] == 200
    assert wsgi("/api/feed/", new_token_key(victim.pk), address="198.51.100.7")[0] == 401
    window = store.window_of(60, time.time())[0]
    assert store.client().get(store.throttle_key("feed", f"u:{victim.pk}", window)) == b"2"


def test_malformed_and_inactive_tokens_count_as_failures(wsgi, five_failures):
    inactive = UserFactory(is_active=False)
    dead = make_token(inactive)
    for header in ("Token", "Token a b", "token\tzz.yy"):
        res = APIClient().get("/api/me/", HTTP_AUTHORIZATION=header)
        assert res.status_code == 401, (header, res.content)
    assert wsgi("/api/feed/", dead)[0] == 401
    assert drf("/api/me/", dead).status_code == 401
    res = drf("/api/me/", dead)
    assert res.status_code == 429 and int(res["Retry-After"]) > 0


def test_two_tokens_of_one_user_share_one_feed_throttle(wsgi):
    old = FeedReadThrottle.rate
    FeedReadThrottle.rate = "4/min"
    try:
        user, other = UserFactory(), UserFactory()
        first, second = make_token(user), make_token(user, id_prefix=False)
        assert wsgi("/api/feed/", first)[0] == 200
        assert wsgi("/api/feed/", second)[0] == 200  # (cold: counted once confirmed)
        assert drf("/api/feed/?format=json", second).status_code == 200  # the DRF view
        assert wsgi("/api/feed/", first)[0] == 200
        for token in (first, second):
            status, headers, _ = wsgi("/api/feed/", token)
            assert status == 429 and 0 < int(headers["Retry-After"]) <= 60
            assert drf("/api/feed/?format=json", token).status_code == 429
        assert wsgi("/api/feed/", make_token(other))[0] == 200  # others unaffected
    finally:
        FeedReadThrottle.rate = old


def test_two_tokens_of_one_user_share_one_write_throttle(settings):
    settings.FEEDSITE_THROTTLE_RATES = {**settings.FEEDSITE_THROTTLE_RATES, "write": "3/min"}
    user = UserFactory()
    clients = [APIClient(), APIClient()]
    for client in clients:
        client.credentials(HTTP_AUTHORIZATION=f"Token {make_token(user)}")

    def publish(client: APIClient, n: int) -> int:
        body = {**STAR, "object_id": f"p-{n}"}
        return client.post("/api/activities/", body, format="json").status_code

    assert [publish(clients[i % 2], i) for i in range(3)] == [201, 201, 201]
    for n, client in enumerate(clients):
        res = client.post("/api/activities/", {**STAR, "object_id": f"q-{n}"}, format="json")
        assert res.status_code == 429 and int(res["Retry-After"]) > 0


@pytest.mark.parametrize("id_prefix", [True, False], ids=["id-token", "plain-token"])
def test_the_lane_answers_a_store_outage_with_the_apis_json_503(wsgi, id_prefix, monkeypatch):
    """The token lookup, the prelude or the page: Redis down is the API's JSON 503 with
    Retry-After on the lane, never Django's HTML 500."""
    user = UserFactory()
    token = make_token(user, id_prefix=id_prefix)
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    monkeypatch.setattr(connection, "_client", dead)
    try:
        status, headers, body = wsgi("/api/feed/", token)
    finally:
        dead.close()
    assert status == 503, body
    assert headers["Content-Type"] == "application/json" and int(headers["Retry-After"]) > 0
    assert b'"unavailable"' in body


def _stream_connect(token: str, address: str) -> tuple[int, dict, dict]:
    """A connect to the SSE stream (feeds.stream.application, in process) from ``address``
    that is answered at once (refused): (status, headers, body)."""
    import json

    from feeds import stream
    from tests.unit.test_stream_gateway import _call

    scope = {
        "type": "http",
        "method": "GET",
        "path": stream.PATH,
        "headers": [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Token {token}".encode())],
        "query_string": b"",
        "client": (address, 40000),
    }
    start, body = _call(scope)[:2]
    return start["status"], dict(start["headers"]), json.loads(body["body"])


@pytest.mark.django_db(transaction=True)
def test_failed_stream_logins_are_throttled_per_address(five_failures):
    forged = new_token_key(UserFactory().pk)[:-4] + "beef"
    for _ in range(5):
        assert _stream_connect(forged, "10.9.9.9")[0] == 401
    status, headers, body = _stream_connect(forged, "10.9.9.9")
    assert status == 429 and int(headers[b"retry-after"]) >= 1, body
    assert _stream_connect(forged, "10.9.9.10")[0] == 401  # another address has its own count
