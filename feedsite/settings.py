"""Settings: every value comes from the environment, with safe local defaults."""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

from feedsite import queues

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("FEEDSITE_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# Off unless asked for: `make run` asks (DEBUG=1) and says so.
DEBUG = env_bool("DEBUG", False)
DEV_SECRET_KEY = "dev-only-insecure-key-change-me-in-production-0123456789"
SECRET_KEY = os.environ.get("SECRET_KEY", "") or (DEV_SECRET_KEY if DEBUG else "")


def insecure_secret_key(key: str) -> bool:
    """Empty, short (Django's deploy check wants 50+), the built-in one or a placeholder:
    refused with DEBUG off."""
    return len(key) < 50 or key == DEV_SECRET_KEY or "change-me" in key or "insecure" in key


if not DEBUG and insecure_secret_key(SECRET_KEY):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a long random value when DEBUG is off "
        "(python -c 'import secrets; print(secrets.token_urlsafe(50))'); DEBUG=1 for local use"
    )
ALLOWED_HOSTS = [
    h
    for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",")
    if h
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",  # (its plain-text tokens were moved into knox, hashed)
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc assets served from here: docs work offline
    "feedsite.apps.FeedsiteConfig",
    "activities",
    "follows",
    "feeds",
]

MIDDLEWARE = [
    "feedsite.api.timing.ServerTimingMiddleware",
    "feedsite.middleware.RequestGuardMiddleware",  # before anything reads headers or the body
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = os.environ.get("FEEDSITE_URLCONF", "feedsite.urls")
ASGI_APPLICATION = "feedsite.asgi.application"
WSGI_APPLICATION = "feedsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Ours first: feedsite/templates overrides a library's page (ReDoc without web fonts).
        "DIRS": [BASE_DIR / "feedsite" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# SQLite by default so that `make run` works on a bare machine; CI and production set DATABASE_URL.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker write concurrently: WAL + IMMEDIATE avoids "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
elif env_bool("FEEDSITE_DB_POOL", True):
    # Under ASGI each request's sync code may run on a fresh thread, so per-thread persistent
    # connections pile up ("too many clients"); Django's psycopg pool is the documented fix.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # With the pool, Django has it check a connection (an empty query) before lending it: after
    # a PostgreSQL restart or failover the dead ones are replaced instead of failing a request.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"]["OPTIONS"] = {
        # Server-side binding lets psycopg prepare hot statements (token lookup, pull authors,
        # follower ranges) after 5 runs: planning was most of their time. Django turns psycopg's
        # preparing off unless OPTIONS names prepare_threshold.
        "server_side_binding": env_bool("FEEDSITE_DB_SERVER_SIDE_BINDING", True),
        "prepare_threshold": 5,
        "pool": {
            "min_size": env_int("DB_POOL_MIN", 2),
            "max_size": env_int("DB_POOL_MAX", 8),
            "timeout": env_int("DB_POOL_TIMEOUT", 10),
        },
    }
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One Redis (redis://host:port/db) or a Redis Cluster (redis+cluster://host:port[,host:port...],
# its startup nodes): feeds, timelines, bodies, counters, locks and pub/sub work on either. The
# Celery broker is then its own Redis or RabbitMQ (CELERY_BROKER_URL).
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
REDIS_CLUSTER = REDIS_URL.startswith("redis+cluster://")
# A feed read on a cluster gathers the reader's sources from several nodes: what has not
# arrived after this many ms is left out of that page, which says "partial": true.
FEEDSITE_READ_DEADLINE_MS = env_int("FEEDSITE_READ_DEADLINE_MS", 50)
# On a cluster with replicas, a read's share of a master not answered after the hedge delay is
# also sent to a replica, and the first answer wins (feeds.store.connection.scatter): "auto" (the
# node's observed p95, at least the floor, at most half the deadline), a number of ms, or "off".
FEEDSITE_READ_HEDGE_MS = os.environ.get("FEEDSITE_READ_HEDGE_MS", "auto").strip().lower()
if FEEDSITE_READ_HEDGE_MS not in {"auto", "off"} and not FEEDSITE_READ_HEDGE_MS.isdigit():
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"FEEDSITE_READ_HEDGE_MS={FEEDSITE_READ_HEDGE_MS!r}: auto, off or a whole number of ms"
    )
FEEDSITE_READ_HEDGE_FLOOR_MS = env_int("FEEDSITE_READ_HEDGE_FLOOR_MS", 5)
# On a cluster with replicas, a fan-out batch, an edit and a delete wait this long for one replica
# of each master they wrote to (connection.replicate): a failover loses none of them.
FEEDSITE_REPLICATE_TIMEOUT_MS = env_int("FEEDSITE_REPLICATE_TIMEOUT_MS", 1000)
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        # A list: django-redis splits a LOCATION string at commas (its primary + replicas form),
        # which would cut a cluster's startup nodes (host:port,host:port) apart.
        "LOCATION": [REDIS_URL],
        # The hash tag {g}: on a cluster the cache lives on the node of the other global keys.
        "KEY_PREFIX": os.environ.get("FEEDSITE_KEY_PREFIX", "fs") + ":cache:{g}",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            **(
                {"CONNECTION_FACTORY": "feeds.store.connection.ClusterConnectionFactory"}
                if REDIS_CLUSTER
                else {}
            ),
            # The cache is an optimisation (settings snapshot, account throttles): with Redis
            # down it misses instead of failing the request (throttles fail open).
            "IGNORE_EXCEPTIONS": True,
            "SOCKET_CONNECT_TIMEOUT": 2,
            "SOCKET_TIMEOUT": 2,
        },
    }
}
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024  # request bodies over 64 KB are refused (413)
# How deep a JSON request body may nest (feedsite.api.parsers); deeper is a 400.
FEEDSITE_JSON_MAX_DEPTH = env_int("FEEDSITE_JSON_MAX_DEPTH", 32)

# Per throttle scope, DRF's rate syntax; FEEDSITE_THROTTLE_<SCOPE> overrides each.
FEEDSITE_THROTTLE_RATES: dict[str, str] = {
    scope: os.environ.get(f"FEEDSITE_THROTTLE_{scope.upper()}", rate)
    for scope, rate in {
        "register": "5/min",
        "login": "10/min",
        "write": "120/min",
        "feed": "1200/min",
        # Failed token authentications per client address; past it, a token the cache does
        # not confirm is a 429 before any query (feedsite.api.auth).
        "auth_fail": "60/min",
    }.items()
}
# The throttles' window counter (feedsite.api.throttles loads it by name when a request is
# counted, so the apps' views, which use those throttles, import nothing of feeds).
FEEDSITE_THROTTLE_COUNTER = "feeds.throttles.count_window"
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "feedsite.api.renderers.PagedBrowsableAPIRenderer",  # links to the next page
    ],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "feedsite.api.auth.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "feedsite.api.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "feedsite.api.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": FEEDSITE_THROTTLE_RATES,
    # The client's address is REMOTE_ADDR, which RequestGuardMiddleware sets from the trusted
    # proxies' X-Forwarded-For only: a client cannot pick its own throttle bucket.
    "NUM_PROXIES": 0,
}
# Peers whose X-Forwarded-* headers are believed: addresses or networks, comma- or
# space-separated, and "unix" for the Unix socket of the proxy that `make run` starts
# (feedsite.serve adds it; Caddy itself trusts the addresses and networks: the TLS front proxies).
# Default: none.
FEEDSITE_TRUSTED_PROXIES = os.environ.get("FEEDSITE_TRUSTED_PROXIES", "").replace(",", " ").split()
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")  # (dropped from untrusted peers)
SPECTACULAR_SETTINGS = {
    "TITLE": "feedsite API",
    "DESCRIPTION": "Activity feeds: publish, follow, read a merged, aggregated home feed.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "feedsite.api.schema.add_error_responses",
    ],
}

# --- feedsite ---------------------------------------------------------------------------------
FEEDSITE_KEY_PREFIX = os.environ.get("FEEDSITE_KEY_PREFIX", "fs")
FEEDSITE_BODY_TTL_SECONDS = env_int("FEEDSITE_BODY_TTL_SECONDS", 7 * 24 * 3600)
# Caches dropped explicitly when what they hold changes (token deleted, user saved, follow,
# threshold crossing); the lifetime is a safety net only, and must outlast the gap between two
# reads of an active reader, or warm reads would query PostgreSQL.
FEEDSITE_TOKEN_CACHE_SECONDS = env_int("FEEDSITE_TOKEN_CACHE_SECONDS", 600)
# API tokens (django-rest-knox): hashed at rest, expiring, at most this many per user (the
# oldest go when a login makes one more).
FEEDSITE_TOKEN_TTL_DAYS = env_int("FEEDSITE_TOKEN_TTL_DAYS", 30)
FEEDSITE_TOKENS_PER_USER = env_int("FEEDSITE_TOKENS_PER_USER", 20)
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=FEEDSITE_TOKEN_TTL_DAYS),
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}
FEEDSITE_PULL_AUTHORS_CACHE_SECONDS = env_int("FEEDSITE_PULL_AUTHORS_CACHE_SECONDS", 600)
FEEDSITE_SETTINGS_CACHE_SECONDS = env_int("FEEDSITE_SETTINGS_CACHE_SECONDS", 5)
FEEDSITE_SETTINGS_LOCAL_SECONDS = env_int("FEEDSITE_SETTINGS_LOCAL_SECONDS", 1)
FEEDSITE_FANOUT_MAX_RETRIES = env_int("FEEDSITE_FANOUT_MAX_RETRIES", 8)
FEEDSITE_FANOUT_BACKOFF_MAX = env_int("FEEDSITE_FANOUT_BACKOFF_MAX", 60)
FEEDSITE_MAX_DELIVERIES = env_int("FEEDSITE_MAX_DELIVERIES", 5)
# On a cluster with replicas, a fan-out step (a batch, the author-side writes of a job) counts as
# done only once what it wrote reached one replica of each master concerned (WAIT; feeds.store.
# failover): a master lost right after acknowledging takes none of a done batch's entries with it.
FEEDSITE_FANOUT_REPLICATE = env_bool("FEEDSITE_FANOUT_REPLICATE", True)
# A fan-out task that meets a failover (a master gone or silent, a write not replicated) waits at
# most this long for the cluster to serve every slot again before its retry (cluster-node-timeout,
# 15 s, plus the election), so the bounded retries are not spent seconds apart on a dead master.
FEEDSITE_FAILOVER_WAIT_SECONDS = env_int("FEEDSITE_FAILOVER_WAIT_SECONDS", 40)
FEEDSITE_SWEEP_PENDING_SECONDS = env_int("FEEDSITE_SWEEP_PENDING_SECONDS", 30)
# A running job with no batch finished for this long has lost batches (a worker killed with
# them, a broker error while sending): the sweeper sends the uncounted ones again (a batch still
# in flight then runs twice, which is harmless). A whole worker SIGKILLed mid fan-out resumes
# within ~40 s (tests/faults), not the Redis broker's visibility timeout. Not while the fanout
# queue holds more than FEEDSITE_SWEEP_MAX_QUEUE messages: then the batches are most likely
# waiting their turn, not lost.
FEEDSITE_SWEEP_EVERY_SECONDS = env_int("FEEDSITE_SWEEP_EVERY_SECONDS", 5)
FEEDSITE_SWEEP_STALLED_SECONDS = env_int("FEEDSITE_SWEEP_STALLED_SECONDS", 25)
FEEDSITE_SWEEP_MAX_QUEUE = env_int("FEEDSITE_SWEEP_MAX_QUEUE", 2000)
# Fan-out jobs that finished cleanly are deleted (with their batch markers) after this many
# days, hourly; failed ones stay with their dead letters.
FEEDSITE_JOB_RETENTION_DAYS = env_int("FEEDSITE_JOB_RETENTION_DAYS", 14)
FEEDSITE_FUTURE_SKEW_SECONDS = env_int("FEEDSITE_FUTURE_SKEW_SECONDS", 300)

# --- Celery (at-least-once fan-out; see shared RELIABILITY.md) ----------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or (
    "amqp://guest:guest@127.0.0.1:5672//" if REDIS_CLUSTER else REDIS_URL
)
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"confirm_publish": True}
    if CELERY_BROKER_URL.startswith("amqp")
    else {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 4)
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_DEFAULT_QUEUE = queues.DEFAULT
CELERY_TASK_ROUTES = {
    "feeds.fanout_batch": {"queue": queues.FANOUT},
    "feeds.fanout_start": {"queue": queues.FANOUT},
    "feeds.backfill_users": {"queue": queues.BACKFILL},
    "feeds.feeds_forget_ids": {"queue": queues.FANOUT},
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULE = {
    "sweep-stalled-fanout-jobs": {
        "task": "feeds.sweep_stalled_jobs",
        "schedule": float(FEEDSITE_SWEEP_EVERY_SECONDS),
    },
    "prune-finished-fanout-jobs": {"task": "feeds.prune_finished_jobs", "schedule": 3600.0},
    "send-due-notification-emails": {"task": "feeds.send_due_emails", "schedule": 60.0},
}

# Email (notifications of offline users): SMTP in production (EMAIL_HOST/PORT/...; compose has
# Mailpit), files in var/mail under `make run` (DEBUG), locmem in tests (pytest-django).
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.filebased.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend"
)
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH") or str(VAR_DIR / "mail")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = os.environ.get("EMAIL_USE_TLS", "0").lower() in {"1", "true", "yes", "on"}
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "feedsite <noreply@localhost>")
CELERY_BEAT_SCHEDULE_FILENAME = os.environ.get(
    "CELERY_BEAT_SCHEDULE_FILENAME", str(VAR_DIR / "celerybeat-schedule")
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # logfmt-style lines; fan-out messages carry job= and activity= so one post is traceable
    # from the web process through every worker batch.
    "formatters": {
        "plain": {"format": "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "feeds": {"handlers": ["console"], "level": os.environ.get("FEEDSITE_LOG_LEVEL", "INFO")}
    },
}

if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("FEEDSITE_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = env_bool("FEEDSITE_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("FEEDSITE_SECURE_COOKIES", True)
    SECURE_HSTS_SECONDS = env_int("FEEDSITE_HSTS_SECONDS", 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# Celery's Django fixup closes the database connection after every task unless this is set;
# a fan-out batch is ~20 ms, so reconnecting each time cost a fifth of it. Reuse, recycle often.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 200)
FEEDSITE_SSE_HEARTBEAT_SECONDS = env_int("FEEDSITE_SSE_HEARTBEAT_SECONDS", 15)
FEEDSITE_SSE_MAX_STREAMS = env_int("FEEDSITE_SSE_MAX_STREAMS", 5)  # per user (429 beyond)
# Per stream server process (a JSON 503 with Retry-After beyond); each costs a socket here and
# two in the proxy. STREAM_CONCURRENCY processes (one per core by default) hold 5,000 each.
FEEDSITE_SSE_MAX_STREAMS_PER_PROCESS = env_int("FEEDSITE_SSE_MAX_STREAMS_PER_PROCESS", 5000)
# Threads of a stream process for database work (cache misses at connect, catch-ups): misses of
# a reconnect storm are served this many at a time, each on a pooled connection.
FEEDSITE_SSE_DB_THREADS = env_int("FEEDSITE_SSE_DB_THREADS", 4)
# The cached followee list a stream's connect reads (feeds.store.followees): kept current on
# every follow and unfollow; this lifetime (from the fill or the last change) is a net.
FEEDSITE_FOLLOWEES_CACHE_SECONDS = env_int("FEEDSITE_FOLLOWEES_CACHE_SECONDS", 3600)
# Events a stream may have waiting for a slow client before it is dropped (`event: dropped`).
FEEDSITE_SSE_QUEUE = env_int("FEEDSITE_SSE_QUEUE", 256)
# A stream whose client has not taken a byte for this long (the server's write buffer full) is
# dropped: its socket, buffers and per-user slot are freed.
FEEDSITE_SSE_WRITE_TIMEOUT_SECONDS = env_int("FEEDSITE_SSE_WRITE_TIMEOUT_SECONDS", 30)
# Every open stream's token (or session) is checked again this often: one that no longer
# authenticates (revoked, expired, user deactivated) ends with `event: revoked`.
FEEDSITE_SSE_RECHECK_SECONDS = env_int("FEEDSITE_SSE_RECHECK_SECONDS", 15)
# /metrics asks for `Authorization: Bearer <token>` when this is set.
FEEDSITE_METRICS_TOKEN = os.environ.get("FEEDSITE_METRICS_TOKEN", "")
# The password `make run` gives the demo admin (ensure_demo_admin): local use only.
FEEDSITE_ADMIN_PASSWORD = os.environ.get("FEEDSITE_ADMIN_PASSWORD", "admin")
