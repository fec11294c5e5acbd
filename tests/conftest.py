"""Test wiring: real Redis (prefix-scoped cleanup), the real database, and a real Celery worker
subprocess for fan-out paths. Nothing of our own infrastructure is mocked."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from feeds import store
from feeds.conf import invalidate_conf
from feedsite import queues
from feedsite.embedded import celery_worker_args, stop_group

ROOT = Path(__file__).resolve().parent.parent
WORKER_MAIL_DIR = Path(settings.VAR_DIR) / f"mail-worker-{os.getpid()}"


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05):
    """Poll until predicate() is truthy; fail with the last value after timeout seconds."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)
        value = predicate()
    return value


def _delete_prefixed() -> None:
    r = store.client()
    keys = list(r.scan_iter(match=f"{settings.FEEDSITE_KEY_PREFIX}:*", count=1000))
    for start in range(0, len(keys), 1000):
        r.delete(*keys[start : start + 1000])


@pytest.fixture(scope="session", autouse=True)
def flush_survives_a_deadlock() -> Iterator[None]:
    """The table flush after a transactional test can meet a query another process started
    (the worker's backfill of a follow the test made, a stream's catch-up): that query holds one
    table and wants the next, the TRUNCATE holds the next and wants the first, and PostgreSQL
    ends one of the two. The flush runs in one transaction that the deadlock rolled back, so it
    is run again once the other query has finished."""
    from django.db import OperationalError
    from django.db.backends.base.operations import BaseDatabaseOperations

    original = BaseDatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        for attempt in range(5):
            try:
                return original(self, sql_list)
            except OperationalError as exc:
                if "deadlock detected" not in str(exc) or attempt == 4:
                    raise
                time.sleep(0.5)
        return None

    BaseDatabaseOperations.execute_sql_flush = execute_sql_flush  # type: ignore[method-assign]
    yield
    BaseDatabaseOperations.execute_sql_flush = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def clean_redis() -> Iterator[None]:
    _delete_prefixed()
    yield


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    # Factories hash a password per user; PBKDF2's 1M rounds made user-heavy tests take minutes.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_settings_cache() -> Iterator[None]:
    invalidate_conf()
    yield
    invalidate_conf()


def _database_url() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def _purge_queues() -> None:
    from feedsite.celery import app

    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in queues.ALL:
            try:
                channel.queue_purge(queue)
            except Exception:  # noqa: BLE001,S110 - a queue that does not exist yet is empty
                pass


@contextlib.contextmanager
def _service(args: list[str], name: str, ready, **env: str) -> Iterator[subprocess.Popen]:
    """A real server process on the test database and Redis, its output in var/NAME-PID.log;
    ``ready(proc, log_text)`` says when it serves. Stopped with its children afterwards."""
    log_path = Path(settings.VAR_DIR) / f"{name}-{os.getpid()}.log"
    full_env = {**os.environ, "DATABASE_URL": _database_url(), **env}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(lambda: proc.poll() is not None or ready(log_path.read_text()), timeout=60)
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{log_path.read_text()[-3000:]}")
            proc.log_path = log_path  # type: ignore[attr-defined]
            yield proc
        finally:
            stop_group(proc)


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker) -> Iterator[subprocess.Popen]:
    """A real `celery worker` (prefork, 2 processes)."""
    _purge_queues()
    args = celery_worker_args(
        queues=",".join(queues.ALL), concurrency=2, node=f"test{os.getpid()}@%h"
    )
    with _service(
        args,
        "worker",
        lambda text: "ready." in text,
        DB_CONN_MAX_AGE="0",
        # Its emails as files the tests read (the worker is another process: no locmem).
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(WORKER_MAIL_DIR),
    ) as proc:
        yield proc


@contextlib.contextmanager
def serve_for_tests(name: str, **env: str) -> Iterator[str]:
    """The production layout (feedsite.serve: Caddy in front of granian's WSGI workers and
    uvicorn's SSE stream) on the test database, with ``env`` on top; yields its URL."""
    from feedsite.embedded import free_port
    from feedsite.serve import serving

    full_env = {**os.environ, "DATABASE_URL": _database_url(), **env}
    log_path = Path(settings.VAR_DIR) / f"{name}-{os.getpid()}.log"
    with (
        open(log_path, "w") as log,
        serving(full_env, port=free_port(), stdout=log, static=False) as (layout, _),
    ):
        yield layout.url


@pytest.fixture(scope="session")
def served(django_db_setup, django_db_blocker) -> Iterator[str]:
    """The production layout on the test database and Redis; yields its URL."""
    with serve_for_tests("served", FEEDSITE_SSE_HEARTBEAT_SECONDS="1", WEB_CONCURRENCY="2") as url:
        yield url


def _queued_messages() -> int:
    from feedsite.celery import app

    total = 0
    with app.connection_for_write() as conn:
        for queue in queues.ALL:
            try:
                total += conn.default_channel.queue_declare(queue, passive=True).message_count
            except Exception:  # noqa: BLE001 - a queue never declared holds nothing
                conn.close()
                conn.connect()
    return total


def _quiet() -> bool:
    from feeds.models import FanoutJob

    busy = FanoutJob.objects.filter(state__in=("pending", "running")).exists()
    return not busy and _queued_messages() == 0


@pytest.fixture
def live_worker(celery_worker_process, transactional_db) -> Iterator[subprocess.Popen]:
    """Committed data (transactional_db) that the worker process can see. Afterwards, wait for
    the worker to go quiet, so the table flush between tests does not race a running task."""
    yield celery_worker_process
    try:
        wait_until(_quiet, timeout=15, interval=0.1)
    except AssertionError:
        pass  # a test that leaves a job pending on purpose: the flush copes
    time.sleep(0.3)  # the last task's commit


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def user_factory():
    from tests.factories import UserFactory

    return UserFactory


def make_token(user, id_prefix: bool = True) -> str:
    """A new API token for ``user``: as login issues it (the user id in front), or without the
    id (a token made elsewhere, e.g. knox's own view)."""
    from knox.models import AuthToken

    from feedsite.api.auth import token_create

    return token_create(user)[0] if id_prefix else AuthToken.objects.create(user=user)[1]


def auth_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_token(user)}")
    return client


def activate(*users) -> None:
    """Give users a built feed, as their first read (or registration) does: fan-out writes only
    to feeds that exist."""
    from feeds.rebuild import users_rebuild

    users_rebuild(user_ids=[u.pk for u in users])


def verify_feeds_clean(*args: str) -> str:
    """`manage.py verify_feeds` over every feed (``args``: e.g. "--sample", "300"): fails the
    test on any missing, extra or duplicate entry (the command exits 1 then)."""
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("verify_feeds", *args, stdout=out)
    assert "wrong=0" in out.getvalue(), out.getvalue()
    return out.getvalue()


@pytest.fixture
def wsgi_get():
    """GET through feedsite.wsgi.application, as granian calls it (the lean lane for
    /api/feed/, the Django stack otherwise), in process, from ``address``: (status, headers,
    body). The test's database connection is kept across requests as Django's test client
    keeps it."""
    import io

    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from feedsite.wsgi import application

    def get(path: str, authorization: str, address: str = "127.0.0.1"):
        # (Django's test client connects these again after each of its requests.)
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        seen: dict = {}

        def start_response(status: str, headers: list) -> None:
            seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "REMOTE_ADDR": address,
            "HTTP_HOST": "testserver",
            "HTTP_AUTHORIZATION": authorization,
            "HTTP_ACCEPT": "application/json",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.url_scheme": "http",
        }
        response = application(environ, start_response)
        body = b"".join(response)
        response.close()
        return seen["status"], seen["headers"], body

    yield get
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
