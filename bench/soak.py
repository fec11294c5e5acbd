"""Soak: a mixed load against the whole running service while faults hit it, then a check that
nothing was lost, resurrected or duplicated.

The stack: the production layout (Caddy, granian, the stream server), a Celery worker with
beat, PostgreSQL, a feed-store Redis of its own with append-only persistence (a restart keeps
its data, so it cannot hide a fan-out loss behind a rebuild) and a broker Redis of its own.
The load: publish, follow, unfollow, delete and read from a few threads, plus live streams
of watchers (users outside the load, each following a fixed handful of its authors; a cut
stream reconnects with `Last-Event-ID`, as a browser's EventSource does). A fault every
FAULT_EVERY seconds, in turn: the whole worker SIGKILLed (a new one started), the feed Redis
restarted, the broker paused (SIGSTOP for 5 s). The last QUIET seconds are fault-free; then it
waits for every fan-out job to finish, lets the streams take the last events, and runs
`verify_feeds`.

Prints requests, statuses and p50/p99 per endpoint, stream events, verify_feeds, then every
failure bench/soak_check.py finds. Exits 1 on any 5xx but a 503 with Retry-After inside a
fault's window (injection until 10 s after the faulted part answers again), a request without
an answer or a stream cut outside such a window, a stream event received twice, an activity a
stream never received (live or replayed), a job not done, or a feed that is wrong.

    make soak                                   # 5 minutes
    DATABASE_URL=postgres://... python bench/soak.py --seconds 300 --quiet 60
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from soak_check import FaultWindow, Post, Request, StreamRecord, soak_failures  # noqa: E402

from feedsite import queues  # noqa: E402
from feedsite.embedded import (  # noqa: E402
    celery_worker_args,
    free_port,
    start_redis,
    stop,
    stop_group,
)

AOF = ("--appendonly", "yes", "--appendfsync", "everysec")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=300, help="whole load time, quiet end included")
    p.add_argument("--quiet", type=int, default=60, help="fault-free seconds at the end")
    p.add_argument("--fault-every", type=int, default=15)
    p.add_argument("--users", type=int, default=60)
    p.add_argument("--threads", type=int, default=3)
    p.add_argument("--rate", type=float, default=40.0, help="requests per second, all threads")
    p.add_argument("--streams", type=int, default=4, help="watchers, one live stream each")
    p.add_argument("--port", type=int, default=8767)
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args()


class Stack:
    """The feed Redis, the broker, the worker: the parts the faults hit."""

    def __init__(self) -> None:
        self.redis_dir = tempfile.mkdtemp(prefix="feedsite-soak-redis-")
        self.redis, self.redis_url = start_redis(workdir=self.redis_dir, extra=AOF)
        self.broker, self.broker_url = start_redis()
        self.worker: subprocess.Popen | None = None
        self.log = open(ROOT / "var" / f"soak-worker-{os.getpid()}.log", "w")  # noqa: SIM115

    def start_worker(self) -> None:
        self.worker_node = f"soak{time.time_ns()}@%h"
        args = celery_worker_args(queues=",".join(queues.ALL), concurrency=2, node=self.worker_node)
        args.append("-B")
        schedule = tempfile.mkdtemp(prefix="feedsite-soak-beat-")
        env = dict(os.environ, CELERY_BEAT_SCHEDULE_FILENAME=f"{schedule}/schedule")
        self.worker = subprocess.Popen(  # noqa: S603
            args,
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_worker(self, timeout: float = 60) -> None:
        """Until the current worker answers a Celery ping (it consumes again)."""
        from feedsite.celery import app

        node = self.worker_node.split("@")[0] + "@"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(node in name for r in app.control.ping(timeout=0.5) for name in r):
                return
        raise RuntimeError(f"the soak's worker did not answer a ping within {timeout:.0f} s")

    # Each fault returns what it did and when the faulted part answered again (monotonic).

    def kill_worker(self) -> tuple[str, float]:
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()
        time.sleep(1)
        self.start_worker()
        self.wait_worker()
        return "worker SIGKILLed, a new one started", time.monotonic()

    def restart_redis(self) -> tuple[str, float]:
        import redis

        port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(self.redis_url).shutdown()  # flushes the append-only file
        self.redis.wait(10)
        # start_redis returns once the server answers PING.
        self.redis, _ = start_redis(port=port, workdir=self.redis_dir, extra=AOF, same_port=True)
        return "feed Redis restarted (append-only file kept)", time.monotonic()

    def pause_broker(self) -> tuple[str, float]:
        import redis

        self.broker.send_signal(signal.SIGSTOP)
        time.sleep(5)
        self.broker.send_signal(signal.SIGCONT)
        client = redis.Redis.from_url(self.broker_url, socket_timeout=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    break
            time.sleep(0.1)
        return "broker paused 5 s", time.monotonic()

    def close(self) -> None:
        if self.worker is not None:
            stop_group(self.worker)
        stop(self.redis)
        stop(self.broker)


class Load:
    """Threads doing a weighted mix of API calls as random users; results per endpoint."""

    MIX = (
        ("read", 40),
        ("notifications", 5),
        ("publish", 25),
        ("follow", 12),
        ("unfollow", 10),
        ("delete", 8),
    )

    def __init__(
        self,
        base: str,
        tokens: dict[int, str],
        rate: float,
        seed: int,
        watchers: dict[int, frozenset[int]],
    ) -> None:
        self.base, self.tokens, self.rate = base, tokens, rate
        self.users = [u for u in tokens if u not in watchers]  # watchers only watch
        self.watchers = watchers  # watcher -> the authors it follows (fixed for the soak)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.posts: dict[int, list[str]] = collections.defaultdict(list)
        self.stop = threading.Event()
        self.streams_stop = threading.Event()  # later: streams take the last fan-outs' events
        self.stream_events = 0
        self.stream_connects = 0
        # What the checker reads (bench/soak_check.py); times in seconds from t0.
        self.t0 = time.monotonic()
        self.requests: list[Request] = []
        self.published: list[Post] = []
        self.deleted: set[str] = set()
        self.stream_events_of: dict[int, list[tuple[str, str]]] = {w: [] for w in watchers}
        self.first_connected: dict[int, float] = {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def record(self, req: Request) -> None:
        with self.lock:
            self.requests.append(req)
            self.statuses[req.name][req.status if req.status is not None else req.error] += 1

    @staticmethod
    def kept_headers(res) -> dict[str, str]:
        return {k: v for k, v in res.headers.items() if k.lower() == "retry-after"}

    def call(self, client, name: str, method: str, path: str, uid: int, **kw):
        started = self.now()
        try:
            res = client.request(
                method,
                self.base + path,
                headers={"Authorization": f"Token {self.tokens[uid]}"},
                timeout=30,
                **kw,
            )
            req = Request(name, started, self.now(), res.status_code, self.kept_headers(res))
        except Exception as exc:  # noqa: BLE001 - no answer: the checker judges it
            res = None
            req = Request(name, started, self.now(), None, error=type(exc).__name__)
        with self.lock:
            self.latency[name].append((req.ended - started) * 1000)
        self.record(req)
        return res

    def step(self, client, rng: random.Random) -> None:
        users = self.users
        uid = rng.choice(users)
        op = rng.choices([m[0] for m in self.MIX], [m[1] for m in self.MIX])[0]
        if op == "read":
            self.call(client, "feed", "GET", "/api/feed/?limit=20", uid)
        elif op == "notifications":
            self.call(client, "notifications", "GET", "/api/notifications/?limit=20", uid)
        elif op == "publish":
            body = {
                "verb": "starred",
                "object_type": "project",
                "object_id": f"p{rng.randrange(9)}",
                "notify": rng.sample(users, 2),  # into notification feeds too
            }
            sent = self.now()
            res = self.call(client, "publish", "POST", "/api/activities/", uid, json=body)
            if res is not None and res.status_code == 201:
                aid = str(res.json()["id"])
                with self.lock:
                    self.posts[uid].append(aid)
                    self.published.append(Post(author=uid, id=aid, sent=sent))
        elif op in ("follow", "unfollow"):
            other = rng.choice(users)
            if other != uid:
                method = "POST" if op == "follow" else "DELETE"
                self.call(client, op, method, f"/api/users/{other}/follow/", uid)
        else:
            with self.lock:
                mine = self.posts[uid]
                aid = mine.pop(rng.randrange(len(mine))) if mine else None
            if aid is not None:
                with self.lock:
                    self.deleted.add(aid)  # whatever the answer: it may have happened
                self.call(client, "delete", "DELETE", f"/api/activities/{aid}/", uid)

    def run(self, seed: int) -> None:
        import httpx

        rng = random.Random(seed)
        interval = 1.0 / self.rate
        with httpx.Client() as client:
            while not self.stop.is_set():
                started = time.monotonic()
                self.step(client, rng)
                time.sleep(max(0.0, interval - (time.monotonic() - started)))

    def stream(self, uid: int) -> None:
        """One watcher's live stream, reconnecting with Last-Event-ID after a cut; records the
        connects (statuses), the cuts, and each event's kind and id."""
        import httpx

        last_id = ""
        while not self.streams_stop.is_set():
            headers = {"Authorization": f"Token {self.tokens[uid]}"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            started, opened = self.now(), False
            try:
                with (
                    httpx.Client(timeout=httpx.Timeout(5, read=30)) as client,
                    client.stream("GET", self.base + "/api/feed/stream/", headers=headers) as res,
                ):
                    self.record(
                        Request(
                            "stream", started, self.now(), res.status_code, self.kept_headers(res)
                        )
                    )
                    if res.status_code != 200:
                        time.sleep(1)
                        continue
                    opened = True
                    with self.lock:
                        self.stream_connects += 1
                    kind, eid, data = "message", "", ""
                    for line in res.iter_lines():
                        if self.streams_stop.is_set():
                            return
                        if line.startswith("retry:"):
                            with self.lock:
                                self.first_connected.setdefault(uid, self.now())
                        elif line.startswith("id:"):
                            eid = line[3:].strip()
                        elif line.startswith("event:"):
                            kind = line[6:].strip()
                        elif line.startswith("data:"):
                            data = line[5:].strip()
                        elif not line:  # the blank line dispatches the event
                            if data and eid:
                                # `id:` is the stream's high-water mark (what Last-Event-ID
                                # sends back); the event's activity is the id in its data.
                                last_id = eid
                                try:
                                    aid = str(json.loads(data).get("id") or eid)
                                except (ValueError, AttributeError):
                                    aid = eid
                                with self.lock:
                                    self.stream_events_of[uid].append((kind, aid))
                                    self.stream_events += kind == "activity"
                            kind, eid, data = "message", "", ""
                cut = "StreamCut(ended)"
            except Exception as exc:  # noqa: BLE001 - the checker judges it by its time
                cut = f"StreamCut({type(exc).__name__})" if opened else type(exc).__name__
            if self.streams_stop.is_set():
                return
            at = self.now()
            # A cut is judged at the moment it happened; a failed connect over its flight.
            self.record(Request("stream", at if opened else started, at, None, error=cut))
            time.sleep(0.5)

    def stream_records(self) -> list[StreamRecord]:
        with self.lock:
            return [
                StreamRecord(
                    name=str(w),
                    followees=authors,
                    first_connected=self.first_connected.get(w),
                    events=list(self.stream_events_of[w]),
                )
                for w, authors in self.watchers.items()
            ]


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else sum(values)


def main() -> int:
    args = parse()
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/feedsite_soak")
    stack = Stack()
    os.environ.update(
        REDIS_URL=stack.redis_url,
        CELERY_BROKER_URL=stack.broker_url,
        FEEDSITE_KEY_PREFIX="fssoak",
        FEEDSITE_THROTTLE_FEED="1000000/min",
        FEEDSITE_THROTTLE_WRITE="1000000/min",
        FEEDSITE_THROTTLE_LOGIN="1000000/min",
        FEEDSITE_THROTTLE_REGISTER="1000000/min",
    )
    try:
        return soak(args, stack)
    finally:
        stack.close()


def soak(args: argparse.Namespace, stack: Stack) -> int:  # noqa: PLR0915 - one linear script
    from common import ensure_users, migrate, tokens_for
    from django.core.management import call_command

    from activities.models import Activity
    from feeds.models import FanoutJob
    from feeds.services import feed_settings_update
    from feedsite.serve import serving
    from follows.models import Follow
    from follows.services import follow_create

    migrate()
    Activity.objects.all().delete()  # a fresh start: no state from an earlier run
    Follow.objects.all().delete()
    FanoutJob.objects.all().delete()
    rng = random.Random(args.seed)
    users = ensure_users("soak", args.users)
    watcher_ids = ensure_users("soak-watch", args.streams)
    # A low threshold: follows and unfollows move authors across it, both ways, all the time.
    feed_settings_update(celebrity_threshold=8, feed_max_length=100, fanout_batch_size=5)
    for uid in users:
        for other in rng.sample(users, 6):
            if other != uid:
                follow_create(follower_id=uid, followee_id=other)
    # Watchers follow a fixed handful of the load's authors and nobody follows, notifies or
    # unfollows as them: what each stream should receive is known exactly.
    watchers = {w: frozenset(rng.sample(users, 6)) for w in watcher_ids}
    for w, authors in watchers.items():
        for author in authors:
            follow_create(follower_id=w, followee_id=author)
    everyone = users + watcher_ids
    tokens = dict(zip(everyone, tokens_for(everyone), strict=True))
    stack.start_worker()
    stack.wait_worker()
    port = free_port(args.port)
    env = dict(os.environ, DEBUG="0", FEEDSITE_SECURE_SSL_REDIRECT="0", WEB_CONCURRENCY="2")
    log = open(ROOT / "var" / f"soak-serve-{os.getpid()}.log", "w")  # noqa: SIM115
    faults = [stack.kill_worker, stack.restart_redis, stack.pause_broker]
    windows: list[FaultWindow] = []
    with serving(env, port=port, stdout=log, static=False):
        load = Load(
            f"http://127.0.0.1:{port}", tokens, args.rate / args.threads, args.seed, watchers
        )
        streams = [threading.Thread(target=load.stream, args=(w,), daemon=True) for w in watchers]
        threads = [
            threading.Thread(target=load.run, args=(args.seed + i,), daemon=True)
            for i in range(args.threads)
        ]
        for t in streams:
            t.start()
        deadline = time.monotonic() + 30
        while len(load.first_connected) < len(watchers) and time.monotonic() < deadline:
            time.sleep(0.1)
        for t in threads:
            t.start()
        started = time.monotonic()
        fault_until = started + args.seconds - args.quiet
        n = 0
        while time.monotonic() < fault_until:
            time.sleep(args.fault_every)
            if time.monotonic() >= fault_until:
                break
            injected = load.now()
            what, recovered = faults[n % len(faults)]()
            windows.append(FaultWindow(what, injected, recovered - load.t0))
            n += 1
            print(
                f"t={injected:5.1f}s fault {n}: {what}; answered again at "
                f"t={recovered - load.t0:.1f}s",
                flush=True,
            )
        time.sleep(max(0.0, started + args.seconds - time.monotonic()))
        load.stop.set()
        print(f"t={load.now():5.1f}s load stopped; waiting for fan-out", flush=True)
        deadline = time.monotonic() + 180
        busy = FanoutJob.objects.exclude(state="done")
        while busy.exists() and time.monotonic() < deadline:
            time.sleep(1)
        for t in threads:
            t.join(5)
        time.sleep(3)  # the last jobs' announcements reach the streams
        load.streams_stop.set()
        records = load.stream_records()
    not_done = list(busy.values_list("id", "state"))
    total = sum(sum(c.values()) for c in load.statuses.values())
    print(f"\nrequests={total} faults={n} seconds={args.seconds} quiet={args.quiet}")
    print(f"{'endpoint':13} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for name in ("feed", "notifications", "publish", "follow", "unfollow", "delete", "stream"):
        lat = load.latency.get(name, [])
        codes = " ".join(f"{k}:{v}" for k, v in sorted(load.statuses[name].items(), key=str))
        p50 = f"{statistics.median(lat):8.1f}" if lat else f"{'-':>8}"
        p99 = f"{pct(lat, 99):8.1f}" if lat else f"{'-':>8}"
        print(f"{name:13} {sum(load.statuses[name].values()):9} {p50} {p99}  {codes}")
    from soak_check import expected_activities

    expected = sum(len(expected_activities(r, load.published, load.deleted)) for r in records)
    print(
        f"streams={len(records)} connects={load.stream_connects} "
        f"activity events={load.stream_events} expected={expected}"
    )
    out = io.StringIO()
    try:
        call_command("verify_feeds", stdout=out)
        clean = True
    except SystemExit:
        clean = False
    print(out.getvalue().strip() or "verify_feeds: no output")
    failures = soak_failures(load.requests, windows, records, load.published, load.deleted)
    for line in failures[:30]:
        print("FAIL", line)
    if len(failures) > 30:
        print(f"FAIL ... and {len(failures) - 30} more")
    errors_5xx = sum(1 for r in load.requests if r.status is not None and r.status >= 500)
    no_answer = sum(1 for r in load.requests if r.status is None)
    ok = clean and not failures and not not_done
    print(
        f"soak {'PASSED' if ok else 'FAILED'}: failures={len(failures)} 5xx={errors_5xx} "
        f"no_answer={no_answer} jobs_not_done={len(not_done)} verify_clean={clean}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
