"""A connect path that scales: with warm caches a stream connects without any SQL (the token
entry, the followee and hidden lists come from Redis in one round trip), so a burst of connects
is answered together, not one at a time on one thread; misses go to PostgreSQL several at a time.
Both are shown by holding PostgreSQL's tables locked while streams connect. The cached followee
list is kept current by follows and unfollows, and a fill that raced a follow is refused. On the
production layout (Caddy -> one uvicorn stream process)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import psycopg
import pytest
from django.conf import settings

from feeds import store
from feeds.followees import followees_load, listened_load
from feeds.store.followees import (
    followees_fill,
    followees_from_cache,
    followees_key,
    followees_version,
)
from follows.models import Follow
from follows.services import follow_create, follow_delete, mute_create
from tests.conftest import make_token, serve_for_tests
from tests.factories import UserFactory

pytestmark = pytest.mark.skipif(
    "postgresql" not in settings.DATABASES["default"]["ENGINE"],
    reason="holds PostgreSQL table locks while streams connect",
)


@pytest.fixture(scope="module")
def served_one(django_db_setup, django_db_blocker) -> Iterator[str]:
    with serve_for_tests(
        "stream-storm",
        FEEDSITE_SSE_HEARTBEAT_SECONDS="1",
        STREAM_CONCURRENCY="1",
        WEB_CONCURRENCY="1",
    ) as url:
        yield url


@pytest.fixture(autouse=True)
def _postgresql_idle_before_teardown() -> Iterator[None]:
    """After each test, what it set going elsewhere (the stream server, a worker) has finished
    its queries before the teardown truncates the tables (a TRUNCATE meeting a query that holds
    one table and wants another is a deadlock)."""
    yield
    with tables_locked():  # no table: only its wait for PostgreSQL to be idle
        pass


async def _open(port: int, token: str, timeout: float) -> tuple[int, bool, asyncio.StreamWriter]:
    """(status, whether `retry:` arrived within ``timeout``, the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"GET /api/feed/stream/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Token {token}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    try:
        async with asyncio.timeout(timeout):
            status = int((await reader.readline()).split()[1])
            while status == 200:
                line = await reader.readline()
                if not line or line.startswith(b"retry:"):
                    return status, bool(line), writer
            return status, False, writer
    except TimeoutError:
        return 0, False, writer


async def _burst(url: str, tokens: list[str], timeout: float) -> list[tuple[int, bool]]:
    """Every token connects at once; returns (status, connected) each, all closed after."""
    port = int(url.rsplit(":", 1)[1])
    results = await asyncio.gather(*(_open(port, t, timeout) for t in tokens))
    for _, _, writer in results:
        writer.close()
    return [(status, connected) for status, connected, _ in results]


@contextlib.contextmanager
def tables_locked(*tables: str) -> Iterator[psycopg.Connection]:
    """Another session holds these tables locked (ACCESS EXCLUSIVE: no read gets through)."""
    db = settings.DATABASES["default"]
    conn = psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"]
    )
    try:
        if tables:
            conn.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
        yield conn
    finally:
        conn.rollback()
        # What waited on the locks (the streams' catch-ups) runs to its end before the test's
        # teardown truncates the tables under it.
        conn.autocommit = True
        quiet, deadline = 0, time.monotonic() + 60
        while quiet < 10 and time.monotonic() < deadline:
            time.sleep(0.2)
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state <> 'idle' AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()[0]
            quiet = quiet + 1 if busy == 0 else 0
        conn.close()


def _streams_ended(users) -> None:
    """Until the server has ended every stream of ``users`` (their registries empty) and
    PostgreSQL has been idle for a second: nothing of theirs (a new stream's opening snapshot,
    which may wait while connects arrive in a burst) queries tables the teardown truncates."""
    r = store.client()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(r.zcard(store.streams_key(u.pk)) for u in users):
        time.sleep(0.2)
    with tables_locked():  # no table: only its wait for PostgreSQL to be idle
        pass


def _waiting_on_locks(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    ).fetchone()
    return int(row[0])


def test_warm_connects_run_no_sql_and_a_burst_all_connects(served_one, transactional_db):
    """150 streams whose token, followee and hidden lists are cached all connect at once while
    PostgreSQL's token, follow, block and mute tables are locked: no connect waits on SQL."""
    author = UserFactory()
    users = UserFactory.create_batch(150)
    for user in users:
        follow_create(follower_id=user.pk, followee_id=author.pk)
    tokens = [make_token(u) for u in users]
    first = asyncio.run(_burst(served_one, tokens, timeout=30))  # the misses fill the caches
    assert first == [(200, True)] * len(tokens)
    time.sleep(1.0)  # the closed streams leave the per-user registries
    with tables_locked("knox_authtoken", "follows_follow", "follows_block", "follows_mute"):
        started = time.monotonic()
        again = asyncio.run(_burst(served_one, tokens, timeout=15))
        took = time.monotonic() - started
    _streams_ended(users)
    assert again == [(200, True)] * len(tokens)
    assert took < 15


def test_cache_misses_go_to_postgresql_several_at_a_time(served_one, transactional_db):
    """Cold tokens: each connect asks PostgreSQL. With the token table locked, several of those
    queries wait on the lock at once (one thread would show one), and when it is released every
    stream connects."""
    users = UserFactory.create_batch(6)
    tokens = [make_token(u) for u in users]
    port = int(served_one.rsplit(":", 1)[1])

    async def scenario() -> tuple[int, list[tuple[int, bool]]]:
        with tables_locked("knox_authtoken") as locker:
            pending = [asyncio.create_task(_open(port, t, 30)) for t in tokens]
            most = 0
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and most < 2:
                await asyncio.sleep(0.2)
                most = max(most, _waiting_on_locks(locker))
        results = await asyncio.gather(*pending)
        for _, _, writer in results:
            writer.close()
        return most, [(s, c) for s, c, _ in results]

    most, results = asyncio.run(scenario())
    _streams_ended(users)
    assert most >= 2, "misses were served one at a time"
    assert results == [(200, True)] * len(tokens)


def test_the_followee_list_follows_follows_and_unfollows(transactional_db):
    reader, a, b, c = UserFactory.create_batch(4)
    follow_create(follower_id=reader.pk, followee_id=a.pk)
    # Not built until someone needs it: a connect fills it from PostgreSQL.
    assert followees_from_cache(store.client().hgetall(followees_key(reader.pk)))[0] is None
    heard, _ = listened_load(reader.pk, None, followees_version(reader.pk), frozenset())
    assert heard == {reader.pk, a.pk}

    def cached() -> frozenset[int] | None:
        return followees_from_cache(store.client().hgetall(followees_key(reader.pk)))[0]

    assert cached() == {a.pk}
    follow_create(follower_id=reader.pk, followee_id=b.pk)
    follow_create(follower_id=reader.pk, followee_id=c.pk)
    follow_delete(follower_id=reader.pk, followee_id=a.pk)
    assert cached() == {b.pk, c.pk}
    assert cached() == set(
        Follow.objects.filter(follower_id=reader.pk).values_list("followee_id", flat=True)
    )
    # A mute hides the author from the stream (the hidden list), not from the followee list.
    mute_create(muter_id=reader.pk, muted_id=b.pk)
    assert listened_load(reader.pk, cached(), 0, None) == ({reader.pk, c.pk}, {b.pk})


def test_a_fill_that_raced_a_follow_is_refused(transactional_db):
    """A connect read the list's version, then PostgreSQL before a follow committed: its fill
    would miss the follow, and is refused; the next connect fills the list with it."""
    reader, a, b = UserFactory.create_batch(3)
    follow_create(follower_id=reader.pk, followee_id=a.pk)
    version = followees_version(reader.pk)
    stale = [a.pk]  # what the racing connect read
    follow_create(follower_id=reader.pk, followee_id=b.pk)  # commits, bumps the version
    assert not followees_fill(reader.pk, version, stale, 60)
    assert followees_from_cache(store.client().hgetall(followees_key(reader.pk)))[0] is None
    assert followees_load(reader.pk, followees_version(reader.pk)) == {a.pk, b.pk}
    cached, _ = followees_from_cache(store.client().hgetall(followees_key(reader.pk)))
    assert cached == {a.pk, b.pk}
