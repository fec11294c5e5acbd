"""The production layout behind a TLS-terminating front proxy (a small Python reverse proxy on
loopback that sets X-Forwarded-For/-Proto, as nginx or a load balancer does), with DEBUG off and
the HTTPS redirect on: clients keep their own address and scheme through both proxies; what a
client sends itself (dashed or underscore-spelled) proves nothing; the stream path takes no body;
the sockets behind Caddy are the proxy's alone."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import secrets
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from feedsite.embedded import free_port
from feedsite.serve import Layout, process_env, serving, trusted_proxies
from tests.conftest import _database_url, activate, make_token
from tests.factories import UserFactory

FRONT = "127.0.0.1"  # the front proxy's address, as Caddy sees it: the one trusted peer
CLIENTS = ("127.0.0.2", "127.0.0.3")  # two clients on loopback, neither trusted
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class _FrontProxy(http.server.BaseHTTPRequestHandler):
    """What a TLS-terminating proxy forwards: the request, X-Forwarded-For set to its peer, and
    X-Forwarded-Proto: https (the client spoke TLS to it)."""

    upstream: tuple[str, int]
    protocol_version = "HTTP/1.0"  # one request a connection: no keep-alive bookkeeping

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in HOP_BY_HOP and not k.lower().startswith("x-forwarded-")
        }
        headers |= {"X-Forwarded-For": self.client_address[0], "X-Forwarded-Proto": "https"}
        conn = http.client.HTTPConnection(*self.upstream, timeout=30, source_address=(FRONT, 0))
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            res = conn.getresponse()
            content = res.read()
        finally:
            conn.close()
        self.send_response(res.status)
        for k, v in res.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def front_proxy(caddy_port: int) -> Iterator[str]:
    handler = type("Front", (_FrontProxy,), {"upstream": ("127.0.0.1", caddy_port)})
    server = http.server.ThreadingHTTPServer((FRONT, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{FRONT}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def tls_stack(django_db_setup, django_db_blocker) -> Iterator[tuple[Layout, str]]:
    """The production layout as deployed behind TLS (DEBUG off, HTTPS redirect, HSTS), small
    login/register limits, the front proxy trusted; (layout, the front proxy's URL)."""
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FEEDSITE_SECURE_SSL_REDIRECT": "1",
        "FEEDSITE_SECURE_COOKIES": "1",
        "FEEDSITE_HSTS_SECONDS": "3600",
        "FEEDSITE_TRUSTED_PROXIES": f"{FRONT}/32",
        "FEEDSITE_THROTTLE_LOGIN": "3/min",
        "FEEDSITE_THROTTLE_REGISTER": "2/min",
        "WEB_CONCURRENCY": "1",
    }
    log_path = Path(settings.VAR_DIR) / f"proxy-chain-{os.getpid()}.log"
    with (
        open(log_path, "w") as log,
        serving(env, port=free_port(), stdout=log, static=False) as (layout, _),
        front_proxy(layout.port) as front,
    ):
        yield layout, front


def _client(address: str) -> httpx.Client:
    """A client connecting from ``address`` (any 127/8 address is this machine)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def _login(client: httpx.Client, url: str, username: str) -> httpx.Response:
    return client.post(
        f"{url}/api/auth/token/", json={"username": username, "password": "not-the-password"}
    )


def _within_one_window(seconds: float, window: int = 60) -> None:
    """Wait, if need be, until the current fixed throttle window (aligned to the epoch, as
    feeds.store.throttle counts them) has ``seconds`` left, so that counts made in the next
    ``seconds`` fall in one window."""
    left = window - time.time() % window
    if left < seconds:
        time.sleep(left + 0.1)


def test_each_client_behind_the_front_proxy_has_its_own_login_and_register_throttle(
    tls_stack, transactional_db
):
    """Before, Caddy replaced the front proxy's X-Forwarded-For with the front proxy's own
    address: every client shared one bucket, and anyone could lock a username out."""
    _, front = tls_stack
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    _within_one_window(seconds=30)  # the throttles' fixed minute windows must not roll over
    with _client(CLIENTS[0]) as attacker, _client(CLIENTS[1]) as owner:
        for _ in range(3):  # the limit (3/min)
            res = _login(attacker, front, victim)
            assert res.status_code == 400, res.text  # answered, not redirected: https arrived
            assert "unable to log in" in res.text
        refused = _login(attacker, front, victim)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        # The owner, from another address, still gets to try their password.
        assert _login(owner, front, victim).status_code == 400

        def register(client: httpx.Client) -> int:
            name = f"r{uuid.uuid4().hex[:12]}"
            payload = {"username": name, "password": "a-long-pw-4242"}
            return client.post(f"{front}/api/auth/register/", json=payload).status_code

        assert [register(attacker) for _ in range(3)] == [201, 201, 429]
        assert register(owner) == 201


def test_a_client_reaching_caddy_directly_cannot_claim_an_address_or_https(
    tls_stack, transactional_db
):
    """Only the front proxy's X-Forwarded-* count: a client that sends its own to Caddy, dashed
    or spelled with underscores (which a WSGI server maps to the same HTTP_X_FORWARDED_* key),
    is still http (redirected) and still throttled by its real address."""
    layout, _ = tls_stack
    direct = f"http://127.0.0.1:{layout.port}"
    with _client(CLIENTS[0]) as client:
        for claim in ("X-Forwarded-Proto", "X_Forwarded_Proto", "X_FORWARDED_PROTO"):
            res = client.get(f"{direct}/healthz", headers={claim: "https"})
            assert res.status_code == 301, (claim, res.status_code)
            assert res.headers["Location"].startswith("https://")
    # Through the front proxy (which forwards what it does not know) a client adds
    # underscore-spelled X-Forwarded-For headers of its choosing: each attempt still counts under
    # its real address.
    _, front = tls_stack
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    with _client(CLIENTS[1]) as client:
        codes = [
            client.post(
                f"{front}/api/auth/token/",
                json={"username": victim, "password": "nope"},
                headers={"X_Forwarded_For": f"203.0.113.{i}", "X_Real_Ip": f"203.0.113.{i}"},
            ).status_code
            for i in range(4)
        ]
    assert codes == [400, 400, 400, 429]


def test_a_feed_read_the_lane_declines_keeps_https_behind_the_front_proxy(
    tls_stack, transactional_db
):
    """The lean lane used to hand Django the environ it had rewritten: a request it declined
    (no token, a session cookie, a browser) lost X-Forwarded-Proto and was redirected to the
    https URL it came from, forever, without HSTS."""
    _, front = tls_stack
    reader = UserFactory()
    activate(reader)
    token = make_token(reader)
    declined = [
        {},  # no token
        {"Cookie": "sessionid=abc123"},  # a session
        {"Accept": "text/html"},  # a browser
        {"Authorization": "Token not-a-token"},
    ]
    with _client(CLIENTS[0]) as client:
        for headers in declined:
            res = client.get(f"{front}/api/feed/", headers=headers)
            # (A 301 here sends the client to the https URL it came from: a loop.)
            assert res.status_code in (401, 403), (headers, res.headers.get("Location"))
            assert res.headers["Strict-Transport-Security"].startswith("max-age=3600"), headers
        lane = client.get(f"{front}/api/feed/", headers={"Authorization": f"Token {token}"})
        assert lane.status_code == 200 and "items" in lane.json()
        assert "Strict-Transport-Security" in lane.headers


def _send_raw(port: int, request: bytes) -> bytes:
    """Send ``request`` (headers, maybe a first piece of body, never the rest) and read one
    response with a Content-Length: an app behind Caddy would still be waiting for the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@pytest.mark.parametrize("path", ["/api/feed/stream/", "/api/feed/stream/anything/else"])
def test_the_stream_path_takes_no_request_body(tls_stack, path):
    """A body on the stream path (declared or chunked) is Caddy's 413 at once: the ASGI server,
    which would read it whole before answering, never sees the request."""
    layout, _ = tls_stack
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    for framing, first in (
        ("Content-Length: 100000\r\n", b'{"a": '),  # declared, only 6 bytes of it sent
        ("Transfer-Encoding: chunked\r\n", b'6\r\n{"a": \r\n'),  # a first chunk, no end
    ):
        started = time.monotonic()
        raw = _send_raw(layout.port, (head + framing + "\r\n").encode() + first)
        elapsed = time.monotonic() - started
        status, _, rest = raw.partition(b"\r\n")
        assert status.startswith(b"HTTP/1.1 413"), (framing, raw[:300])
        assert elapsed < 2, elapsed  # answered before the body could ever arrive
        headers, _, body = rest.partition(b"\r\n\r\n")
        assert b"the stream takes no request body" in body
        # None of what Django adds to every response (SecurityMiddleware, X-Frame-Options).
        assert b"x-content-type-options" not in headers.lower(), headers
        assert b"x-frame-options" not in headers.lower(), headers
    # Without a body the stream answers as before (no token: 401 from the stream itself).
    res = httpx.get(f"{layout.url}/api/feed/stream/", timeout=10)
    assert res.status_code in (301, 401), res.status_code


def test_the_sockets_behind_caddy_are_not_reachable_by_other_local_users(tls_stack):
    """Whoever connects to web.sock or a stream-<n>.sock is the trusted proxy to Django: the folder
    holding them is the serving user's alone (uvicorn makes its own socket 0666)."""
    layout, _ = tls_stack
    run_dir = Path(layout.run_dir)
    sockets = [run_dir / "web.sock", *sorted(run_dir.glob("stream-*.sock"))]
    assert all(stat.S_ISSOCK(s.stat().st_mode) for s in sockets)
    if os.geteuid() == 0:  # another user to try it as needs root
        probe = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('refused')\n"
            "else:\n    print('connected')\n"
        )
        for sock in sockets:
            out = subprocess.run(
                ["/usr/bin/python3", "-c", probe, str(sock)],
                user="nobody",
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            assert out.stdout.strip() == "refused", (sock, out.stdout, out.stderr)
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700


def test_trusted_proxies_split_for_caddy_and_django(tmp_path):
    """FEEDSITE_TRUSTED_PROXIES names the front proxies (commas or spaces): Caddy trusts them,
    Django trusts them and Caddy's socket; a typo stops the start with the entry named."""
    layout = Layout(port=1, run_dir=str(tmp_path), static_root=str(tmp_path))
    env = process_env(layout, {"FEEDSITE_TRUSTED_PROXIES": "unix, 10.0.0.7 172.16.0.0/12"})
    assert env["FEEDSITE_PROXY_TRUSTED_PROXIES"] == "10.0.0.7 172.16.0.0/12"
    assert env["FEEDSITE_TRUSTED_PROXIES"] == "unix,10.0.0.7,172.16.0.0/12"
    assert process_env(layout, {})["FEEDSITE_TRUSTED_PROXIES"] == "unix"
    assert process_env(layout, {})["FEEDSITE_PROXY_TRUSTED_PROXIES"] == ""
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        trusted_proxies("10.0.0.1,10.0.0.300")
