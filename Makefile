# The two set-up commands are `make run` and `make test`; everything else is a convenience.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# What the test suite shrinks and isolates (see tests/conftest.py).
TEST_ENV := DEBUG=1 SECRET_KEY=test-only-$(shell od -An -N24 -tx1 /dev/urandom | tr -d ' \n') FEEDSITE_KEY_PREFIX=fstest FEEDSITE_SETTINGS_LOCAL_SECONDS=0 FEEDSITE_FANOUT_MAX_RETRIES=2 FEEDSITE_FANOUT_BACKOFF_MAX=1 \
	FEEDSITE_THROTTLE_REGISTER=1000/min FEEDSITE_THROTTLE_LOGIN=1000/min \
	FEEDSITE_THROTTLE_WRITE=10000/min FEEDSITE_THROTTLE_FEED=100000/min

.PHONY: install run test test-cluster lint format bench bench-fanout bench-read bench-scale bench-streams soak fuzz screenshots

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "feedsite needs Python 3.11+ (set PYTHON=python3.11)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m feedsite.devrun

test: $(STAMP)
	$(TEST_ENV) $(PY) -m feedsite.embedded -- $(PY) -m pytest $(PYTEST_ARGS)

# The fan-out, read, stream and recovery integration tests again on a real 3-master Redis
# Cluster (feedsite.devcluster: redis-server processes on loopback ports); the Celery broker is
# the single Redis (embedded, or REDIS_URL's), as a cluster cannot be a Celery broker.
CLUSTER_TESTS ?= tests/integration/test_cluster.py tests/integration/test_fanout.py \
	tests/integration/test_feed_read.py tests/integration/test_page_read.py \
	tests/integration/test_stream.py tests/integration/test_recovery.py \
	tests/integration/test_notifications.py tests/integration/test_blocks_mutes.py \
	tests/integration/test_migrate_keys.py
# The suites run with a 1 s read deadline: on a loaded 2-core CI machine a healthy node can
# take 50 ms, and their pages must be whole; test_cluster.py sets 50 ms and stops a node.
test-cluster: $(STAMP)
	$(TEST_ENV) FEEDSITE_READ_DEADLINE_MS=1000 $(PY) -m feedsite.embedded -- sh -c 'CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$$REDIS_URL} \
		exec $(PY) -m feedsite.devcluster -- $(PY) -m pytest $(CLUSTER_TESTS) $(PYTEST_ARGS)'

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DEBUG=1 $(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench-fanout: $(STAMP)
	$(PY) -m feedsite.embedded -- $(PY) bench/fanout.py

# The read bench measures what users run: PostgreSQL and a Redis server (this machine's, unless
# DATABASE_URL / REDIS_URL say otherwise), and wrk for the load (`apt-get install wrk`).
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/feedsite_bench
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/5
bench-read: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-$(BENCH_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(BENCH_REDIS_URL)} \
		$(PY) bench/read.py $(BENCH_ARGS)

# Fan-out deliveries/s with 1, 2 and 4 worker processes, one Redis vs a 3-master cluster.
bench-scale: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-$(BENCH_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(BENCH_REDIS_URL)} \
		$(PY) bench/scale.py $(BENCH_ARGS)

bench-streams: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-$(BENCH_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(BENCH_REDIS_URL)} \
		$(PY) bench/streams.py $(BENCH_ARGS)

# Five minutes of mixed load with a fault every 15 s, then verify_feeds (PostgreSQL needed).
SOAK_ARGS ?= --seconds 300 --quiet 60
soak: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/feedsite_soak} \
		$(PY) bench/soak.py $(SOAK_ARGS)

# schemathesis over every API operation, authenticated: 350 cases each, 5,000+ in all (CI).
FUZZ_EXAMPLES ?= 350
fuzz: $(STAMP)
	$(TEST_ENV) FEEDSITE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m feedsite.embedded -- \
		$(PY) -m pytest -s tests/integration/test_schema_fuzz.py

# The README's screenshots (docs/screenshots/), taken by the browser tests against `make run`.
screenshots: $(STAMP)
	$(TEST_ENV) FEEDSITE_SCREENSHOT_DIR=docs/screenshots $(PY) -m pytest -q tests/browser

bench: bench-fanout bench-read bench-streams
