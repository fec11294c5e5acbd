"""Soak: a mixed load against the whole running service while faults hit it, then a check that
nothing was lost, resurrected or duplicated.

The stack: the production layout (Caddy, granian, the stream server), a Celery worker with
beat, PostgreSQL, a feed-store Redis of its own with append-only persistence (a restart keeps
its data, so it cannot hide a fan-out loss behind a rebuild) and a broker Redis of its own.
The load: publish, follow, unfollow, delete and read from a few threads, plus live streams.
A fault every FAULT_EVERY seconds, in turn: the whole worker SIGKILLed (a new one started),
the feed Redis restarted, the broker paused (SIGSTOP for 5 s). The last QUIET seconds are
fault-free; then it waits for every fan-out job to finish and runs `verify_feeds`.

Prints requests, errors by status, p50/p99 per endpoint, stream events, then verify_feeds.
Exits 1 on any 500, a job not done, or a feed that is wrong.

    make soak                                   # 5 minutes
    DATABASE_URL=postgres://... python bench/soak.py --seconds 300 --quiet 60
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
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
    p.add_argument("--streams", type=int, default=4)
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
        args = celery_worker_args(
            queues=",".join(queues.ALL), concurrency=2, node=f"soak{time.time_ns()}@%h"
        )
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

    def kill_worker(self) -> str:
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()
        time.sleep(1)
        self.start_worker()
        return "worker SIGKILLed, a new one started"

    def restart_redis(self) -> str:
        import redis

        port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(self.redis_url).shutdown()  # flushes the append-only file
        self.redis.wait(10)
        self.redis, _ = start_redis(port=port, workdir=self.redis_dir, extra=AOF, same_port=True)
        return "feed Redis restarted (append-only file kept)"

    def pause_broker(self) -> str:
        self.broker.send_signal(signal.SIGSTOP)
        time.sleep(5)
        self.broker.send_signal(signal.SIGCONT)
        return "broker paused 5 s"

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

    def __init__(self, base: str, tokens: dict[int, str], rate: float, seed: int) -> None:
        self.base, self.tokens, self.rate = base, tokens, rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.posts: dict[int, list[str]] = collections.defaultdict(list)
        self.stop = threading.Event()
        self.stream_events = 0
        self.stream_connects = 0

    def call(self, client, name: str, method: str, path: str, uid: int, **kw):
        started = time.perf_counter()
        try:
            res = client.request(
                method,
                self.base + path,
                headers={"Authorization": f"Token {self.tokens[uid]}"},
                timeout=30,
                **kw,
            )
            status = res.status_code
        except Exception as exc:  # noqa: BLE001 - counted by kind
            res, status = None, type(exc).__name__
        with self.lock:
            self.latency[name].append((time.perf_counter() - started) * 1000)
            self.statuses[name][status] += 1
        return res

    def step(self, client, rng: random.Random) -> None:
        users = list(self.tokens)
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
            res = self.call(client, "publish", "POST", "/api/activities/", uid, json=body)
            if res is not None and res.status_code == 201:
                with self.lock:
                    self.posts[uid].append(str(res.json()["id"]))
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
        import httpx

        while not self.stop.is_set():
            try:
                with (
                    httpx.Client(timeout=httpx.Timeout(5, read=30)) as client,
                    client.stream(
                        "GET",
                        self.base + "/api/feed/stream/",
                        headers={"Authorization": f"Token {self.tokens[uid]}"},
                    ) as res,
                ):
                    with self.lock:
                        self.statuses["stream"][res.status_code] += 1
                        self.stream_connects += 1
                    for line in res.iter_lines():
                        if line.startswith("event: activity"):
                            with self.lock:
                                self.stream_events += 1
                        if self.stop.is_set():
                            return
            except Exception as exc:  # noqa: BLE001 - a fault cut it: reconnect
                with self.lock:
                    self.statuses["stream"][type(exc).__name__] += 1
                time.sleep(0.5)


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
    # A low threshold: follows and unfollows move authors across it, both ways, all the time.
    feed_settings_update(celebrity_threshold=8, feed_max_length=100, fanout_batch_size=5)
    for uid in users:
        for other in rng.sample(users, 6):
            if other != uid:
                follow_create(follower_id=uid, followee_id=other)
    tokens = dict(zip(users, tokens_for(users), strict=True))
    stack.start_worker()
    port = free_port(args.port)
    env = dict(os.environ, DEBUG="0", FEEDSITE_SECURE_SSL_REDIRECT="0", WEB_CONCURRENCY="2")
    log = open(ROOT / "var" / f"soak-serve-{os.getpid()}.log", "w")  # noqa: SIM115
    faults = [stack.kill_worker, stack.restart_redis, stack.pause_broker]
    with serving(env, port=port, stdout=log, static=False):
        load = Load(f"http://127.0.0.1:{port}", tokens, args.rate / args.threads, args.seed)
        threads = [
            threading.Thread(target=load.run, args=(args.seed + i,), daemon=True)
            for i in range(args.threads)
        ] + [
            threading.Thread(target=load.stream, args=(users[i],), daemon=True)
            for i in range(args.streams)
        ]
        for t in threads:
            t.start()
        started = time.monotonic()
        fault_until = started + args.seconds - args.quiet
        n = 0
        while time.monotonic() < fault_until:
            time.sleep(args.fault_every)
            if time.monotonic() >= fault_until:
                break
            what = faults[n % len(faults)]()
            n += 1
            print(f"t={time.monotonic() - started:5.1f}s fault {n}: {what}", flush=True)
        time.sleep(max(0.0, started + args.seconds - time.monotonic()))
        load.stop.set()
        print(f"t={time.monotonic() - started:5.1f}s load stopped; waiting for fan-out", flush=True)
        deadline = time.monotonic() + 180
        busy = FanoutJob.objects.exclude(state="done")
        while busy.exists() and time.monotonic() < deadline:
            time.sleep(1)
        for t in threads:
            t.join(5)
    not_done = list(busy.values_list("id", "state"))
    total = sum(sum(c.values()) for c in load.statuses.values())
    print(f"\nrequests={total} faults={n} seconds={args.seconds} quiet={args.quiet}")
    print(f"{'endpoint':10} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for name in ("feed", "notifications", "publish", "follow", "unfollow", "delete", "stream"):
        lat = load.latency.get(name, [])
        codes = " ".join(f"{k}:{v}" for k, v in sorted(load.statuses[name].items(), key=str))
        p50 = f"{statistics.median(lat):8.1f}" if lat else f"{'-':>8}"
        p99 = f"{pct(lat, 99):8.1f}" if lat else f"{'-':>8}"
        print(f"{name:10} {sum(load.statuses[name].values()):9} {p50} {p99}  {codes}")
    print(f"stream connects={load.stream_connects} activity events={load.stream_events}")
    errors_500 = sum(c for s in load.statuses.values() for k, c in s.items() if k == 500)
    out = io.StringIO()
    try:
        call_command("verify_feeds", stdout=out)
        clean = True
    except SystemExit:
        clean = False
    print(out.getvalue().strip() or "verify_feeds: no output")
    ok = clean and not errors_500 and not not_done
    print(
        f"soak {'PASSED' if ok else 'FAILED'}: 500s={errors_500} jobs_not_done={len(not_done)} "
        f"verify_clean={clean}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
