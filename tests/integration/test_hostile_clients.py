"""Who the client is, how fast it may guess and write, and defaults that are safe: a client
cannot pick its own throttle bucket, every login form and write is throttled with Retry-After,
DEBUG off refuses an insecure SECRET_KEY, /metrics is closed, `check --deploy` is clean."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from feedsite.middleware import client_address, is_trusted_proxy
from feedsite.settings import insecure_secret_key
from tests.conftest import ROOT, auth_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
STAR = {"verb": "starred", "object_type": "project", "object_id": "p-1"}


@pytest.fixture
def rates(settings):
    """Production-like rates for the scopes a test hits (the suite's are raised)."""
    settings.FEEDSITE_THROTTLE_RATES = {
        **settings.FEEDSITE_THROTTLE_RATES,
        "login": "5/min",
        "register": "3/min",
        "write": "4/min",
    }
    return settings


def test_client_address_believes_only_trusted_proxies():
    none: tuple[str, ...] = ()
    assert client_address("203.0.113.9", "1.2.3.4", none) == "203.0.113.9"
    proxies = ("unix", "10.0.0.0/8")
    assert client_address("", "1.2.3.4, 198.51.100.7", proxies) == "198.51.100.7"
    assert client_address("10.1.1.1", "198.51.100.7, 10.2.2.2", proxies) == "198.51.100.7"
    assert client_address("203.0.113.9", "1.2.3.4", proxies) == "203.0.113.9"
    assert not is_trusted_proxy("", none) and is_trusted_proxy("", ("unix",))
    assert not is_trusted_proxy("not-an-ip", proxies)


def test_forwarded_for_from_an_untrusted_client_does_not_escape_the_login_throttle(rates, api):
    user = UserFactory()
    statuses = [
        api.post(
            "/api/auth/token/",
            {"username": user.username, "password": "wrong"},
            format="json",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{i}",
        ).status_code
        for i in range(8)
    ]
    assert statuses[:5] == [400] * 5 and statuses[5:] == [429] * 3, statuses


def test_behind_a_trusted_proxy_each_real_client_has_its_own_bucket(rates, api):
    rates.FEEDSITE_TRUSTED_PROXIES = ["127.0.0.1"]
    user = UserFactory()

    def attempt(client_ip: str) -> int:
        return api.post(
            "/api/auth/token/",
            {"username": user.username, "password": "wrong"},
            format="json",
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_FORWARDED_FOR=f"6.6.6.6, {client_ip}",  # the client wrote the first entry
        ).status_code

    assert [attempt("198.51.100.1") for _ in range(6)][-1] == 429
    assert attempt("198.51.100.2") == 400  # another client: its own bucket


@pytest.mark.parametrize("path", ["/admin/login/", "/api-auth/login/"])
def test_the_html_login_forms_are_throttled_with_retry_after(rates, path):
    get_user_model().objects.create_user("victim", password="pw-correct-horse-9")
    browser = Client(enforce_csrf_checks=False)
    res = None
    for _ in range(6):
        res = browser.post(path, {"username": "victim", "password": "guess"})
    assert res is not None and res.status_code == 429
    assert int(res["Retry-After"]) > 0


def test_register_publish_follow_and_delete_are_throttled(rates, api):
    codes = [
        api.post(
            "/api/auth/register/",
            {"username": f"n{i}", "password": "a-long-enough-password-42"},
            format="json",
        ).status_code
        for i in range(4)
    ]
    assert codes == [201, 201, 201, 429]
    user, other = UserFactory(), UserFactory()
    client = auth_client(user)
    first = client.post("/api/activities/", STAR, format="json")
    assert first.status_code == 201
    assert client.post(f"/api/users/{other.pk}/follow/").status_code == 201
    assert client.delete(f"/api/activities/{first.json()['id']}/").status_code == 204
    assert client.delete(f"/api/users/{other.pk}/follow/").status_code == 204
    refused = client.post("/api/activities/", STAR, format="json")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert client.get(f"/api/users/{other.pk}/").status_code == 200  # reads are not writes


@pytest.mark.parametrize(
    ("key", "insecure"),
    [
        ("", True),
        ("short", True),
        ("dev-only-insecure-key-change-me-in-production-0123456789", True),
        ("change-me-to-50-random-characters-xxxxxxxxxxxxxxxx", True),
        ("Yq3v7kK1dX0pWm9sZr2tLb8nCf5hJg4aUe6oPi1yTxQwZz0b9Rr5Nn7Mm", False),
    ],
)
def test_insecure_secret_keys_are_recognised(key, insecure):
    assert insecure_secret_key(key) is insecure


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_with_debug_off_the_built_in_secret_key_is_refused():
    res = _manage("check")  # DEBUG off is the default, no SECRET_KEY
    assert res.returncode != 0 and "SECRET_KEY must be set" in res.stderr


def test_check_deploy_is_clean_in_the_production_configuration():
    res = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY="Yq3v7kK1dX0pWm9sZr2tLb8nCf5hJg4aUe6oPi1yTxQwZz0b9Rr5Nn7Mm",
        ALLOWED_HOSTS="feeds.example.com",
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_metrics_are_closed_without_a_token_when_debug_is_off(settings, api):
    settings.DEBUG, settings.FEEDSITE_METRICS_TOKEN = False, ""
    assert api.get("/metrics").status_code == 403
    settings.FEEDSITE_METRICS_TOKEN = "t0ken"
    assert api.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert api.get("/metrics", HTTP_AUTHORIZATION="Bearer t0ken").status_code == 200


def test_through_the_proxy_a_spoofed_forwarded_for_is_replaced_by_the_real_peer(transactional_db):
    """The production layout: Caddy sets X-Forwarded-For to the peer it saw (dropping what the
    client wrote) and the workers trust only Caddy's socket: one client, one login bucket."""
    import httpx

    from tests.conftest import serve_for_tests

    user = UserFactory()
    with serve_for_tests("served-xff", FEEDSITE_THROTTLE_LOGIN="5/min") as url:
        # The throttle counts in fixed minutes: seven attempts straddling a minute's end would
        # start counting again. Begin early in a minute.
        if time.time() % 60 > 40:
            time.sleep(60.5 - time.time() % 60)
        statuses = [
            httpx.post(
                f"{url}/api/auth/token/",
                json={"username": user.username, "password": "wrong"},
                headers={"X-Forwarded-For": f"10.9.8.{i}", "X-Forwarded-Proto": "https"},
                timeout=10,
            ).status_code
            for i in range(7)
        ]
    assert statuses == [400] * 5 + [429] * 2, statuses
