# The two set-up commands are `make run` and `make test`; everything else is a convenience.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Exact versions with every file's hash: what `make run`, `make test`, CI and the image install.
# requirements.lock has everything (the dev extra too); requirements-runtime.lock, the same
# versions less the dev tools, is the image's. `make lock` makes both anew.
LOCK := requirements.lock
RUNTIME_LOCK := requirements-runtime.lock

# What the test suite shrinks and isolates (see tests/conftest.py).
TEST_ENV := DEBUG=1 SECRET_KEY=test-only-$(shell od -An -N24 -tx1 /dev/urandom | tr -d ' \n') FEEDSITE_KEY_PREFIX=fstest FEEDSITE_SETTINGS_LOCAL_SECONDS=0 FEEDSITE_FANOUT_MAX_RETRIES=2 FEEDSITE_FANOUT_BACKOFF_MAX=1 \
	FEEDSITE_THROTTLE_REGISTER=1000/min FEEDSITE_THROTTLE_LOGIN=1000/min \
	FEEDSITE_THROTTLE_WRITE=10000/min FEEDSITE_THROTTLE_FEED=100000/min

.PHONY: install lock run test test-cluster lint format bench bench-fanout bench-read bench-read-cluster bench-replicate bench-scale bench-streams soak fuzz screenshots

# Two pip runs: with --require-hashes pip refuses any requirement without a hash, and the project
# itself (editable, --no-deps: its dependencies are the lock's) has none; it is built with the
# lock's setuptools (--no-build-isolation), not an unpinned one fetched for the build. The venv's
# own pip does it; an unpinned `pip install --upgrade pip` would be the one thing not locked.
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "feedsite needs Python 3.11+ (set PYTHON=python3.11)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Resolve pyproject.toml's dependencies anew (newest versions allowed; `make lock LOCK_ARGS=` keeps
# today's pins and only adds what pyproject.toml gained) for Python 3.11+ on every platform
# (--universal: markers, not this machine, decide e.g. uvloop or tzdata), each file's hash
# recorded. uv runs from a throwaway venv; the runtime lock takes the full lock's versions.
UV_VERSION ?= 0.13.9
LOCK_ARGS ?= --upgrade
UV_COMPILE := pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command 'make lock' --quiet
lock:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp" && "$$tmp/bin/pip" install -q --disable-pip-version-check uv==$(UV_VERSION) && \
	"$$tmp/bin/uv" $(UV_COMPILE) --extra dev $(LOCK_ARGS) -o $(LOCK) && \
	"$$tmp/bin/uv" $(UV_COMPILE) -c $(LOCK) -o $(RUNTIME_LOCK)

run: $(STAMP)
	$(PY) -m feedsite.devrun

test: $(STAMP)
	$(TEST_ENV) $(PY) -m feedsite.embedded -- $(PY) -m pytest $(PYTEST_ARGS)

# The fan-out, read, stream and recovery integration tests again on a real 3-master Redis
# Cluster with a replica behind each master (feedsite.devcluster: redis-server processes on
# loopback ports; cluster-node-timeout 15 s, tests that fail a master over shorten it); the Celery broker is
# the single Redis (embedded, or REDIS_URL's), as a cluster cannot be a Celery broker.
CLUSTER_TESTS ?= tests/integration/test_cluster.py tests/integration/test_fanout.py \
	tests/integration/test_feed_read.py tests/integration/test_page_read.py \
	tests/integration/test_stream.py tests/integration/test_recovery.py \
	tests/integration/test_notifications.py tests/integration/test_blocks_mutes.py \
	tests/integration/test_migrate_keys.py tests/integration/test_feed_history.py \
	tests/integration/test_object_sources.py tests/integration/test_object_sources_read.py \
	tests/integration/test_hedged_reads.py tests/integration/test_failover.py
# The suites run with a 1 s read deadline: on a loaded 2-core CI machine a healthy node can
# take 50 ms, and their pages must be whole; test_cluster.py sets 50 ms and stops a node.
test-cluster: $(STAMP)
	$(TEST_ENV) FEEDSITE_READ_DEADLINE_MS=1000 $(PY) -m feedsite.embedded -- sh -c 'CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$$REDIS_URL} \
		exec $(PY) -m feedsite.devcluster --replicas 1 --node-timeout 15000 -- $(PY) -m pytest $(CLUSTER_TESTS) $(PYTEST_ARGS)'

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DEBUG=1 $(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Fan-out on full feeds against Redis' own floor, on the machine's PostgreSQL and Redis (as the
# README's figures), unless DATABASE_URL / REDIS_URL say otherwise.
bench-fanout: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-$(BENCH_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(BENCH_REDIS_URL)} \
		$(PY) bench/fanout.py $(BENCH_ARGS)

# The read bench measures what users run: PostgreSQL and a Redis server (this machine's, unless
# DATABASE_URL / REDIS_URL say otherwise), and wrk for the load (`apt-get install wrk`).
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/feedsite_bench
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/5
bench-read: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-$(BENCH_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(BENCH_REDIS_URL)} \
		$(PY) bench/read.py $(BENCH_ARGS)

# The read on a 3-master Redis Cluster with a replica behind each: hedged reads on vs off in
# alternating rounds (two servers side by side), then a master stalled for 5 s under load.
bench-read-cluster: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-$(BENCH_DATABASE_URL)} $(PY) -m feedsite.devcluster --replicas 1 \
		--node-timeout 15000 -- $(PY) bench/read.py --hedging --rounds 6 $(BENCH_ARGS)

# What fan-out's WAIT for a replica costs (3 masters + 3 replicas), WAIT on vs off in alternating
# rounds, beside a check after the job.
bench-replicate: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-$(BENCH_DATABASE_URL)} $(PY) bench/replicate.py \
		--followers 100000 --rounds 3 $(BENCH_ARGS)

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
