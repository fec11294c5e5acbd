"""The Celery app: queues default / fanout / backfill, JSON only, no result backend."""

import os

from celery import Celery
from celery.signals import task_postrun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedsite.settings")

app = Celery("feedsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_postrun.connect(dispatch_uid="feedsite.release_db_connection")
def release_db_connection(**kwargs) -> None:
    """After every task, Django's own end-of-request step: a connection that failed (PostgreSQL
    restarted) is closed instead of failing every later task of this child, and with the pool a
    healthy one goes back to it (the pool checks it before lending it again). Celery's fixup
    keeps connections for CELERY_DB_REUSE_MAX tasks without looking at them."""
    from django.db import close_old_connections

    close_old_connections()
