"""The production layout (feedsite.serve): Caddy in front of granian's WSGI workers (with the lean
feed lane) and uvicorn's SSE stream, all on one port."""

from __future__ import annotations

import socket
import statistics
import time

import httpx
import pytest

from activities.services import activity_publish
from feeds.models import FanoutJob
from feedsite.api.auth import new_token_key
from follows.services import follow_create
from tests.conftest import activate, make_token, wait_until
from tests.factories import UserFactory

pytestmark = pytest.mark.worker


@pytest.fixture
def reader_with_feed(live_worker):
    def make(n: int = 30):
        """A reader following one author with ``n`` posts, fanned out by the real worker."""
        author, reader = UserFactory(), UserFactory()
        activate(reader)
        follow_create(follower_id=reader.pk, followee_id=author.pk)
        ids = [
            activity_publish(
                actor_id=author.pk,
                data={"verb": "starred", "object_type": "project", "object_id": f"p{i}"},
            )[0].id
            for i in range(n)
        ]
        wait_until(lambda: FanoutJob.objects.filter(activity_id__in=ids, state="done").count() == n)
        return reader

    return make


def _token(user, new_format: bool) -> str:
    return make_token(user, id_prefix=new_format)


@pytest.mark.parametrize("new_format", [True, False], ids=["id-token", "plain-token"])
def test_lean_lane_answers_exactly_what_the_drf_view_answers(served, reader_with_feed, new_format):
    reader = reader_with_feed()
    headers = {"Authorization": f"Token {_token(reader, new_format)}"}
    cursor = None
    for _ in range(3):  # three pages: the cursor made by one path is read by the other
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        lean = httpx.get(f"{served}/api/feed/", params=params, headers=headers, timeout=10)
        drf = httpx.get(
            f"{served}/api/feed/", params={**params, "format": "json"}, headers=headers, timeout=10
        )
        assert lean.status_code == drf.status_code == 200
        assert lean.json() == drf.json()
        assert len(lean.json()["items"]) == 7
        assert "Allow" not in lean.headers and "Allow" in drf.headers  # two paths, one body
        cursor = lean.json()["next_cursor"]
    # What the Django stack adds to a response, the lane adds too.
    for name in ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Server-Timing"):
        assert name in lean.headers, name
    assert int(lean.headers["Content-Length"]) == len(lean.content)
    assert lean.headers["Content-Type"] == "application/json"


def test_lane_errors_are_the_apis_errors(served, reader_with_feed):
    reader = reader_with_feed(1)
    headers = {"Authorization": f"Token {_token(reader, True)}"}
    bad = httpx.get(f"{served}/api/feed/", params={"limit": 0}, headers=headers, timeout=10)
    assert bad.status_code == 400 and "limit" in bad.json()
    forged = new_token_key(reader.pk)  # the right user id, the wrong secret
    res = httpx.get(f"{served}/api/feed/", headers={"Authorization": f"Token {forged}"}, timeout=10)
    assert res.status_code == 401 and res.headers["WWW-Authenticate"] == "Token"
    assert httpx.get(f"{served}/api/feed/", timeout=10).status_code == 401
    other = httpx.get(
        f"{served}/api/feed/", headers={**headers, "Host": "evil.example"}, timeout=10
    )
    assert other.status_code == 400  # ALLOWED_HOSTS holds on the lane too


def _stalled_client(url: str, token: str) -> socket.socket:
    """Sends a POST's headers with a Content-Length, and never the body."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(
        (
            "POST /api/activities/ HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            f"Authorization: Token {token}\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n"
            '{"verb": "starred", '
        ).encode()
    )
    return sock


def _read_ms(url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    res = httpx.get(f"{url}/api/feed/", headers=headers, timeout=10)
    assert res.status_code == 200
    return (time.perf_counter() - started) * 1000


def test_stalled_clients_do_not_hold_the_workers(served, reader_with_feed):
    """More clients than web workers (2) send headers and never their body: the proxy holds
    them, and another client's feed read is not delayed by more than 100 ms."""
    reader = reader_with_feed(5)
    headers = {"Authorization": f"Token {_token(reader, True)}"}
    before = statistics.median(_read_ms(served, headers) for _ in range(7))
    stalled = [_stalled_client(served, headers["Authorization"][6:]) for _ in range(6)]
    try:
        time.sleep(0.5)  # they are all waiting on their bodies now
        during = statistics.median(_read_ms(served, headers) for _ in range(7))
    finally:
        for sock in stalled:
            sock.close()
    assert during - before < 100, (before, during)


def test_lane_leaves_other_media_types_to_drf(served, reader_with_feed):
    reader = reader_with_feed(2)
    headers = {"Authorization": f"Token {_token(reader, True)}"}
    xml = httpx.get(f"{served}/api/feed/", headers={**headers, "Accept": "application/xml"})
    assert xml.status_code == 406  # as DRF answers it
    pretty = httpx.get(
        f"{served}/api/feed/", headers={**headers, "Accept": "application/json; indent=2"}
    )
    assert pretty.status_code == 200 and b"\n  " in pretty.content


def test_the_process_environment_is_not_part_of_a_request():
    """granian copies os.environ into every request's environ; none of it reaches Django."""
    import io
    import os

    from django.http import HttpResponse

    from feedsite.wsgi import lane_application

    seen: dict = {}

    def lane(request):
        seen.update(request.META)
        return HttpResponse(b"ok")

    environ = {
        **os.environ,
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/probe/",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
    }
    response = lane_application({"/probe/": lane})(environ, lambda status, headers: None)
    assert b"".join(response) == b"ok"
    assert "PATH" in os.environ and "PATH" not in seen
    assert seen["HTTP_HOST"] == "127.0.0.1"
