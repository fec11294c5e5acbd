import os

import pytest
from django.db import connection


@pytest.mark.django_db
def test_ci_runs_on_postgresql_when_database_url_says_so():
    url = os.environ.get("DATABASE_URL", "")
    expected = "postgresql" if url.startswith("postgres") else "sqlite"
    assert connection.vendor == expected
