"""Revocation that revokes: logout with any spelling of the scheme knox accepts, logout
everywhere while other requests hammer the token, a deactivated user, a token edited in the
admin: after the change returns, no request with the token succeeds, on the DRF views and on the
lean feed lane (feedsite.wsgi), then or later. A 204 means revoked: when the token cache cannot
be written, logout is a 503 with Retry-After and the token keeps working. Real PostgreSQL and
Redis; the races run against the production layout (Caddy, two granian workers)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import httpx
import pytest
import redis
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from feeds import store
from feeds.store import connection
from feedsite.api.auth import token_digest
from feedsite.embedded import start_redis, stop
from tests.conftest import make_token, wait_until
from tests.factories import UserFactory

SPELLINGS = ["Token {}", "token {}", "TOKEN {}", "Token\t{}", "tOkEn  {}"]


@pytest.fixture
def wsgi(wsgi_get):
    """GET through feedsite.wsgi.application with an Authorization header (conftest)."""
    return lambda path, authorization: wsgi_get(path, authorization)


def statuses(api, wsgi, user, authorization: str) -> list[int]:
    """The token's answer on the lane (WSGI and the URL's view), the DRF feed view and a DRF
    view with an id."""
    api.credentials(HTTP_AUTHORIZATION=authorization)
    return [
        wsgi("/api/feed/", authorization)[0],
        api.get("/api/feed/").status_code,
        api.get("/api/feed/", {"format": "json"}).status_code,
        api.get(f"/api/users/{user.pk}/").status_code,
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("spelling", SPELLINGS, ids=["Token", "token", "TOKEN", "tab", "mixed"])
@pytest.mark.parametrize("id_prefix", [True, False], ids=["id-token", "plain-token"])
def test_logout_revokes_the_very_token_whatever_the_spelling_of_the_scheme(
    api, wsgi, spelling, id_prefix
):
    user = UserFactory()
    key, other = make_token(user, id_prefix=id_prefix), make_token(user, id_prefix=id_prefix)
    header = spelling.format(key)
    assert statuses(api, wsgi, user, header) == [200] * 4  # cached in Redis now
    api.credentials(HTTP_AUTHORIZATION=header)
    assert api.post("/api/auth/logout/").status_code == 204
    assert not AuthToken.objects.filter(digest__startswith=token_digest(key)).exists()
    for written in (header, f"Token {key}"):
        assert statuses(api, wsgi, user, written) == [401] * 4, written
    _, headers, body = wsgi("/api/feed/", f"Token {key}")
    assert headers["Content-Type"] == "application/json" and b"Invalid token" in body
    assert headers["WWW-Authenticate"] == "Token"
    # Later: the tombstone gone (its 60 s over), nothing cached brings the token back.
    store.token_delete([token_digest(key)])
    assert statuses(api, wsgi, user, f"Token {key}") == [401] * 4
    assert statuses(api, wsgi, user, f"Token {other}") == [200] * 4  # the user's other token


@pytest.mark.django_db
def test_logoutall_revokes_every_token_of_the_caller_and_no_one_elses(api, wsgi):
    user, bystander = UserFactory(), UserFactory()
    keys = [make_token(user, id_prefix=i % 2 == 0) for i in range(3)]
    theirs = make_token(bystander)
    for key in [*keys, theirs]:
        assert wsgi("/api/feed/", f"Token {key}")[0] == 200
    api.credentials(HTTP_AUTHORIZATION=f"token\t{keys[1]}")
    assert api.post("/api/auth/logoutall/").status_code == 204
    for key in keys:
        assert statuses(api, wsgi, user, f"Token {key}") == [401] * 4
    assert statuses(api, wsgi, bystander, f"Token {theirs}") == [200] * 4


def _hammer(url: str, user_id: int, keys: list[str], stop_at: list[float], log: list) -> None:
    """Requests with every key, round robin, the lane and a DRF view in turn, until
    ``stop_at[0]``: (sent at, key, status) of each."""
    with httpx.Client(timeout=10) as client:
        n = 0
        while time.monotonic() < stop_at[0]:
            key = keys[n % len(keys)]
            path = "/api/feed/" if n % 2 else f"/api/users/{user_id}/"
            sent = time.monotonic()
            status = client.get(url + path, headers={"Authorization": f"Token {key}"}).status_code
            log.append((sent, key, status))
            n += 1


def _race(served: str, user, keys: list[str], revoke) -> None:
    """Four threads hammer the keys while ``revoke()`` runs; no request sent after it
    returned succeeds, then or once the tombstones are gone."""
    stop_at, log = [time.monotonic() + 60], []
    threads = [
        threading.Thread(target=_hammer, args=(served, user.pk, keys, stop_at, log))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    wait_until(lambda: sum(1 for _, _, s in log if s == 200) >= 40, timeout=30)
    revoke()
    done = time.monotonic()
    stop_at[0] = done + 1.5
    for t in threads:
        t.join(30)
    after = [s for sent, _, s in log if sent > done]
    assert len(after) > 20, len(after)
    assert set(after) <= {401, 429}, sorted(set(after))  # 429: this address failed 60 times
    assert 401 in after
    # No late refill left a live entry: only tombstones (or nothing) under these tokens.
    for key in keys:
        assert store.token_get(token_digest(key)) in (None, store.TOMBSTONE)
    store.token_delete([token_digest(k) for k in keys])  # as when the tombstones expire
    failures = store.client().keys(store.throttle_key("auth_fail", "*", 0)[:-1] + "*")
    if failures:  # this address's failed authentications: forgotten, to see the 401s again
        store.client().delete(*failures)
    for key in keys:
        for path in ("/api/feed/", f"/api/users/{user.pk}/"):
            res = httpx.get(served + path, headers={"Authorization": f"Token {key}"}, timeout=10)
            assert res.status_code == 401, (path, res.status_code)


@pytest.mark.worker
def test_logoutall_wins_the_race_with_requests_on_every_process(served, transactional_db):
    user = UserFactory()
    keys = [make_token(user, id_prefix=i % 2 == 0) for i in range(3)]

    def logoutall() -> None:
        res = httpx.post(
            f"{served}/api/auth/logoutall/",
            headers={"Authorization": f"TOKEN {keys[0]}"},
            timeout=10,
        )
        assert res.status_code == 204, res.text

    _race(served, user, keys, logoutall)


@pytest.mark.worker
def test_deactivating_a_user_wins_the_race_with_their_requests(served, transactional_db):
    user = UserFactory()
    keys = [make_token(user), make_token(user, id_prefix=False)]

    def deactivate() -> None:
        user.is_active = False
        user.save()

    _race(served, user, keys, deactivate)


@pytest.fixture
def admin_client():
    from django.test import Client

    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def _admin_edit(admin_client, row: AuthToken, **changes) -> None:
    row.refresh_from_db()
    expiry = changes.get("expiry", row.expiry)
    form = {
        "digest": row.digest,
        "token_key": row.token_key,
        "user": changes.get("user", row.user_id),
        "expiry_0": expiry.strftime("%Y-%m-%d"),
        "expiry_1": expiry.strftime("%H:%M:%S"),
    }
    res = admin_client.post(f"/admin/knox/authtoken/{row.pk}/change/", form)
    assert res.status_code == 302, res.content[:3000]


@pytest.mark.django_db
def test_a_token_expired_in_the_admin_stops_working_at_once(api, wsgi, admin_client):
    user = UserFactory()
    key = make_token(user)
    assert statuses(api, wsgi, user, f"Token {key}") == [200] * 4
    row = AuthToken.objects.get(user=user)
    _admin_edit(admin_client, row, expiry=timezone.now() - timedelta(minutes=1))
    assert store.token_get(token_digest(key)) == store.TOMBSTONE
    assert statuses(api, wsgi, user, f"Token {key}") == [401] * 4


@pytest.mark.django_db
def test_a_token_moved_to_another_user_in_the_admin_answers_as_that_user(api, wsgi, admin_client):
    user, other = UserFactory(), UserFactory()
    key = make_token(user)
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/me/").json()["id"] == user.pk  # cached as the user's
    _admin_edit(admin_client, AuthToken.objects.get(user=user), user=other.pk)
    assert store.token_get(token_digest(key)) == store.TOMBSTONE
    assert api.get("/api/me/").json()["id"] == other.pk
    # The token still names the first user in front: the lane leaves it to the view, which
    # answers as the token's user now.
    assert wsgi("/api/feed/", f"Token {key}")[0] == 200
    assert api.get("/api/feed/").status_code == 200
    assert api.get("/api/me/").json()["id"] == other.pk


@pytest.mark.django_db
def test_a_deactivated_user_is_refused_at_once(api, wsgi):
    user = UserFactory()
    key = make_token(user, id_prefix=False)
    assert statuses(api, wsgi, user, f"Token {key}") == [200] * 4
    user.is_active = False
    user.save()
    assert statuses(api, wsgi, user, f"Token {key}") == [401] * 4
    user.is_active = True
    user.save()
    assert statuses(api, wsgi, user, f"Token {key}") == [200] * 4  # reactivated: at once


@pytest.fixture
def read_only_store(monkeypatch):
    """The store on a Redis of its own with a real read-only replica, switched to the replica
    and back (as a failover to a replica and its end): on the replica reads answer and every
    write is refused with READONLY. A primary of its own (not the shared test Redis) syncs its
    replica at once, whatever else that server holds."""
    primary_proc, primary_url = start_redis()
    primary = redis.Redis.from_url(primary_url, socket_connect_timeout=1)
    port = primary.connection_pool.connection_kwargs["port"]
    proc, url = start_redis(extra=("--replicaof", "127.0.0.1", str(port)))
    replica = redis.Redis.from_url(url, socket_connect_timeout=1)
    monkeypatch.setattr(connection, "_client", primary)

    class Switch:
        @staticmethod
        def on() -> None:
            wait_until(lambda: replica.info("replication").get("master_link_status") == "up")
            primary.set("fs-sync-probe", 1)  # (no key of ours: not the prefix)
            wait_until(lambda: replica.get("fs-sync-probe") == b"1")
            primary.delete("fs-sync-probe")
            monkeypatch.setattr(connection, "_client", replica)

        @staticmethod
        def off() -> None:
            monkeypatch.setattr(connection, "_client", primary)

    try:
        yield Switch
    finally:
        monkeypatch.undo()
        for client, process in ((replica, proc), (primary, primary_proc)):
            client.close()
            stop(process)


@pytest.mark.django_db
@pytest.mark.skipif(store.is_cluster(), reason="one Redis and its replica")
def test_when_the_token_cache_cannot_be_written_logout_is_a_503_and_revokes_nothing(
    api, wsgi, read_only_store
):
    user = UserFactory()
    key = make_token(user)
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/feed/").status_code == 200  # cached
    read_only_store.on()
    assert api.get(f"/api/users/{user.pk}/").status_code == 200  # read from the replica
    for path in ("/api/auth/logout/", "/api/auth/logoutall/"):
        res = api.post(path)
        assert res.status_code == 503, res.content
        assert int(res["Retry-After"]) > 0 and res.json()["code"] == "unavailable"
    assert AuthToken.objects.filter(user=user).exists()
    assert api.get(f"/api/users/{user.pk}/").status_code == 200  # the token still works
    read_only_store.off()
    assert statuses(api, wsgi, user, f"Token {key}") == [200] * 4
    assert api.post("/api/auth/logout/").status_code == 204  # the store back: revoked
    assert statuses(api, wsgi, user, f"Token {key}") == [401] * 4


def _login_while(hold) -> tuple[threading.Thread, dict]:
    """Start a login (POST /api/auth/token/) in a thread while ``hold`` keeps a transaction
    open in another: (thread, its result)."""
    result: dict = {}

    def login() -> None:
        from django.db import connection as db

        try:
            res = APIClient().post(
                "/api/auth/token/",
                {"username": hold.user.username, "password": "pw-correct-horse-9"},
                format="json",
            )
            result["status"], result["body"] = res.status_code, res.json()
        finally:
            db.close()

    thread = threading.Thread(target=login)
    thread.start()
    return thread, result


class _Hold:
    """A transaction on another connection that does ``work`` and stays open until released."""

    def __init__(self, user, work) -> None:
        self.user, self.work = user, work
        self.done, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        from django.db import connection as db
        from django.db import transaction

        try:
            with transaction.atomic():
                self.work()
                self.done.set()
                self.release.wait(20)
        finally:
            db.close()

    def __enter__(self):
        self.thread.start()
        assert self.done.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.thread.join(20)


@pytest.mark.django_db(transaction=True)
def test_a_login_racing_logoutall_waits_for_it_and_its_token_is_not_revoked_half_way():
    from feedsite.api.auth import tokens_revoke

    user = UserFactory()
    old = make_token(user)
    with _Hold(user, lambda: tokens_revoke(AuthToken.objects.filter(user=user))) as hold:
        thread, result = _login_while(hold)
        time.sleep(0.5)
        assert thread.is_alive()  # the login waits for the logoutall's transaction
    thread.join(20)
    assert result["status"] == 200, result
    fresh = APIClient()
    fresh.credentials(HTTP_AUTHORIZATION=f"Token {result['body']['token']}")
    assert fresh.get("/api/me/").status_code == 200  # made after the logoutall: it stands
    fresh.credentials(HTTP_AUTHORIZATION=f"Token {old}")
    assert fresh.get("/api/me/").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_a_login_racing_a_deactivation_gets_no_token():
    user = UserFactory()

    def deactivate() -> None:
        user.is_active = False
        user.save()

    with _Hold(user, deactivate) as hold:
        thread, result = _login_while(hold)
        time.sleep(0.5)
        assert thread.is_alive()  # waits on the user's row
    thread.join(20)
    assert result["status"] == 400, result
    assert not AuthToken.objects.filter(user=user).exists()
