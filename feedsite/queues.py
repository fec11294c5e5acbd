"""The Celery queues, named once (settings' routes, the worker `make run` starts, /metrics, the
tests). Pure constants: settings import this module before Django is set up."""

DEFAULT = "default"
FANOUT = "fanout"  # fan-out entry and batch tasks: the latency of every post
BACKFILL = "backfill"  # `manage.py backfill --celery`: long, and never in front of a post
ALL = (DEFAULT, FANOUT, BACKFILL)
