"""PostgreSQL drops every connection (a restart, a failover): the next requests find their pooled
connections dead. The pool checks a connection before lending it, so none of them is a 500."""

from __future__ import annotations

import httpx
from django.db import connection

from tests.conftest import auth_client
from tests.factories import UserFactory


def _kill_other_connections() -> int:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        return cur.fetchone()[0]


def test_no_500_after_the_database_dropped_every_connection(served, transactional_db):
    if connection.vendor != "postgresql":
        return  # SQLite has no server to restart
    user = UserFactory()
    headers = {"Authorization": f"Token {auth_client(user)._credentials['HTTP_AUTHORIZATION'][6:]}"}
    url = f"{served}/api/users/{user.pk}/"
    for _ in range(8):  # every web worker holds pooled connections now
        assert httpx.get(url, headers=headers, timeout=10).status_code == 200
    assert _kill_other_connections() >= 1
    statuses = [httpx.get(url, headers=headers, timeout=10).status_code for _ in range(8)]
    assert statuses == [200] * 8
