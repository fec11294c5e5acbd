"""Read benchmark: GET /api/feed/?limit=20 through the production layout (Caddy in front of
granian's WSGI workers, feedsite.serve), at concurrency 16 from wrk (the Python generator when
wrk is not installed), 10,000 readers, server-side latency from the Server-Timing header and
what the client waited (wrk's own latency: queueing and proxy included) at c=16 and at a light
load (c=2), and a page deep past what the Redis feeds hold (from PostgreSQL); then, in the same
run and through the same layout, fan-out on read in PostgreSQL
(bench/wsgi_sql.py: the same prelude round trip, then one query with the bodies, then the same
aggregation and JSON code; both lanes answer the same JSON, checked first), and the server
floor (a trivial Django view).

    make bench-read     # PostgreSQL and Redis of this machine; see the Makefile
    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/read.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from common import ROOT, apply_redis_conf, delete_prefixed, ensure_users, migrate, tokens_for
from django.conf import settings
from django.db import connection

from activities.ids import make_id
from activities.models import Activity
from activities.selectors import activity_to_dict, encode_body
from feeds import store
from feeds.conf import get_conf
from feeds.models import Notification
from feeds.services import feed_settings_update
from feedsite.serve import serving
from follows.models import Follow, UserStats

VERBS = ["starred", "commented", "forked", "released"]
THRESHOLD = 5000
LIGHT = 2  # the light load's concurrency


NOTIFICATION_PATHS = ("/api/notifications/?limit=20", "/api/notifications/counts/")


def build(
    readers: int,
    push_authors: int,
    pull_authors: int,
    follows_each: int,
    posts: int,
    cap: int,
    seed: int,
):
    rng = random.Random(seed)
    reader_ids = ensure_users("rb-reader", readers)
    push_ids = ensure_users("rb-push", push_authors)
    pull_ids = ensure_users("rb-pull", pull_authors)
    follows: dict[int, list[int]] = {}
    for r in reader_ids:
        follows[r] = rng.sample(push_ids, follows_each) + rng.sample(pull_ids, 3)
    if Follow.objects.filter(follower_id__in=reader_ids[:1]).count() == 0:
        rows = [
            Follow(follower_id=r, followee_id=a) for r, authors in follows.items() for a in authors
        ]
        Follow.objects.bulk_create(rows, batch_size=10000, ignore_conflicts=True)
        counts: dict[int, int] = {}
        for authors in follows.values():
            for a in authors:
                counts[a] = counts.get(a, 0) + 1
        for a, n in counts.items():
            UserStats.objects.filter(user_id=a).update(followers_count=n)
    else:  # reuse: read the graph back
        follows = {}
        for f, a in Follow.objects.filter(follower_id__in=reader_ids).values_list(
            "follower_id", "followee_id"
        ):
            follows.setdefault(f, []).append(a)
    by_actor: dict[int, list[int]] = {}
    if not Activity.objects.filter(actor_id=push_ids[0]).exists():
        from django.utils import timezone

        now = timezone.now().replace(microsecond=0)
        acts = []
        for author in push_ids + pull_ids:
            n = posts if author in push_ids else cap
            for _ in range(n):
                moment = now - timedelta(
                    seconds=rng.randrange(30 * 86400), milliseconds=rng.randrange(1000)
                )
                acts.append(
                    Activity(
                        id=make_id(moment),
                        actor_id=author,
                        time=moment,
                        verb=rng.choice(VERBS),
                        object_type="project",
                        object_id=f"proj-{rng.randrange(400)}",
                        object_title="a project",
                    )
                )
        acts.sort(key=lambda a: a.id)  # in time order, as a live service writes them
        Activity.objects.bulk_create(acts, batch_size=5000, ignore_conflicts=True)
    time_ordered_activities()
    for aid, actor in Activity.objects.filter(actor_id__in=push_ids + pull_ids).values_list(
        "id", "actor_id"
    ):
        by_actor.setdefault(actor, []).append(aid)
    for ids in by_actor.values():
        ids.sort(reverse=True)
    # Redis: bodies, timelines, and each reader's pushed feed (newest `cap` of its push authors):
    # the state fan-out leaves behind, written in bulk.
    delete_prefixed()
    activities = Activity.objects.filter(actor_id__in=push_ids + pull_ids).select_related("actor")
    batch: dict[int, bytes] = {}
    for a in activities.iterator(chunk_size=5000):
        batch[a.id] = encode_body(activity_to_dict(a))
        if len(batch) >= 5000:
            store.set_bodies(batch)
            batch = {}
    store.set_bodies(batch)
    r = store.client()
    pipe = r.pipeline(transaction=False)
    for author, ids in by_actor.items():
        pipe.zadd(store.timeline_key(author), {store.encode_id(i): 0 for i in ids[:cap]})
    pipe.execute()
    pull = set(pull_ids)
    for n, (reader, authors) in enumerate(follows.items()):
        newest = heapq.nlargest(
            cap, (i for a in authors if a not in pull for i in by_actor.get(a, [])[:cap])
        )
        pipe.zadd(store.feed_key(reader), {store.encode_id(i): 0 for i in newest})
        if n % 100 == 99:
            pipe.execute()
    pipe.execute()
    build_notifications(reader_ids, by_actor, push_ids, rng)
    return tokens_for(reader_ids)


def time_ordered_activities() -> None:
    """Rows of the activities table in id (time) order, as a live service writes them, and
    fresh statistics. A database that an older set-up filled author by author is put in order
    once (CLUSTER): on rows grouped by author the planner reads each followee's whole history
    and sorts it instead of taking the newest by the (actor, -id) index, a layout no service
    has."""
    table = Activity._meta.db_table
    with connection.cursor() as cur:
        cur.execute(f"ANALYZE {table}")
        cur.execute(
            "SELECT correlation FROM pg_stats WHERE tablename = %s AND attname = 'id'", [table]
        )
        row = cur.fetchone()
        if row is not None and row[0] is not None and row[0] < 0.9:
            cur.execute(f"CLUSTER {table} USING {table}_pkey")
            cur.execute(f"ANALYZE {table}")


def build_notifications(reader_ids, by_actor, push_ids, rng, each: int = 40) -> None:
    """Each reader's notification feed: ``each`` notifications (half of them read), in
    PostgreSQL and in Redis as delivery leaves them."""
    actor_of = {i: a for a in push_ids for i in by_actor.get(a, [])}
    pool = list(actor_of)
    if not Notification.objects.filter(recipient_id=reader_ids[0]).exists():
        rows = [
            Notification(
                recipient_id=reader,
                activity_id=aid,
                actor_id=actor_of[aid],
                read=rng.random() < 0.5,
            )
            for reader in reader_ids
            for aid in rng.sample(pool, each)
        ]
        Notification.objects.bulk_create(rows, batch_size=10000, ignore_conflicts=True)
    by_reader: dict[int, list[tuple[int, bool]]] = {}
    for reader, aid, read in Notification.objects.filter(recipient_id__in=reader_ids).values_list(
        "recipient_id", "activity_id", "read"
    ):
        by_reader.setdefault(reader, []).append((aid, read))
    cap = get_conf().notification_max_length
    for reader, rows in by_reader.items():
        store.notifications_mark_built(reader, 0)
        store.notifications_build(
            reader,
            [a for a, _ in rows],
            [a for a, read in rows if not read],
            cap=cap,
            complete=len(rows) < cap,  # the feed holds every row: no SQL below it
        )


async def load(
    url: str, tokens: list[str], concurrency: int, seconds: float, ordered: bool = False
) -> tuple[list[float], list[float], int]:
    """A closed-loop load generator for machines without wrk: `concurrency` keep-alive HTTP/1.1
    connections, each sending the next request when the last answer is in (plain asyncio
    streams: a full HTTP client cost more CPU than the server it measured). ``ordered``: every
    token once, in order (the warm-up), instead of random tokens for ``seconds``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    server_ms: list[float] = []
    client_ms: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    queue = iter(tokens)

    async def one(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while time.monotonic() < deadline:
                token = next(queue, None) if ordered else rng.choice(tokens)
                if token is None:
                    return
                t0 = time.perf_counter()
                writer.write(
                    f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                    f"Authorization: Token {token}\r\n\r\n".encode()
                )
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                lines = head.split("\r\n")
                headers = {
                    k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)
                }
                await reader.readexactly(int(headers.get("content-length", "0")))
                client_ms.append((time.perf_counter() - t0) * 1000)
                if lines[0].split()[1] != "200":
                    errors += 1
                    continue
                server_ms.append(float(headers["server-timing"].split("dur=")[1]))
        finally:
            writer.close()

    await asyncio.gather(*(one(i) for i in range(concurrency)))
    return server_ms, client_ms, errors


@dataclass
class Run:
    requests: int
    errors: int
    rps: float
    server_ms: list[float]
    # What the client waited (wrk's latency distribution, or the Python generator's clock);
    # runs combined: the median of the runs' percentiles (wrk reports percentiles, not samples).
    client_p50_ms: float = float("nan")
    client_p99_ms: float = float("nan")

    @staticmethod
    def combine(runs: list[Run]) -> Run:
        seconds = sum(r.requests / r.rps for r in runs if r.rps)
        requests = sum(r.requests for r in runs)
        return Run(
            requests,
            sum(r.errors for r in runs),
            requests / seconds if seconds else 0.0,
            [ms for r in runs for ms in r.server_ms],
            statistics.median(r.client_p50_ms for r in runs),
            statistics.median(r.client_p99_ms for r in runs),
        )

    def line(self, name: str) -> str:
        return (
            f"{name}: {self.requests} requests, {self.errors} errors, {self.rps:.0f} req/s, "
            f"server p50 {pct(self.server_ms, 0.5):.2f} ms p99 {pct(self.server_ms, 0.99):.2f} ms"
        )


def run_wrk(url: str, tokens_file: Path, concurrency: int, seconds: float) -> Run:
    out = tokens_file.with_suffix(".timings")
    parts = urlsplit(url)
    env = dict(
        os.environ,
        BENCH_TOKENS=str(tokens_file),
        BENCH_PATH=f"{parts.path}?{parts.query}" if parts.query else parts.path,
        BENCH_OUT=str(out),
    )
    res = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{concurrency}",
            f"-d{seconds:.0f}s",
            "-s",
            str(ROOT / "bench" / "feed.lua"),
            f"{parts.scheme}://{parts.netloc}/",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", res.stdout).group(1))
    total = int(re.search(r"(\d+) requests in", res.stdout).group(1))
    server_ms, errors, client_us = [], 0, {}
    for line in out.read_text().splitlines():
        if line.startswith("errors "):
            errors += int(line.split()[1])
        elif line.startswith("client_"):
            name, value = line.split()
            client_us[name] = float(value)
        elif line:
            server_ms.append(float(line))
    return Run(
        total,
        errors,
        rps,
        server_ms,
        client_us["client_p50_us"] / 1000,
        client_us["client_p99_us"] / 1000,
    )


def run_python(url: str, tokens: list[str], concurrency: int, seconds: float) -> Run:
    server_ms, client_ms, errors = asyncio.run(load(url, tokens, concurrency, seconds))
    return Run(
        len(client_ms),
        errors,
        len(client_ms) / seconds,
        server_ms,
        pct(client_ms, 0.5),
        pct(client_ms, 0.99),
    )


def same_json(base: str, tokens: list[str], n: int = 20) -> int:
    """How many of ``n`` readers get the very same first page (the JSON bytes) from the Redis
    read and from the SQL rival: the two lanes must do the same job."""
    same = 0
    for token in tokens[:: max(1, len(tokens) // n)][:n]:
        bodies = []
        for path in ("/api/feed/?limit=20", "/bench/feed-sql/?limit=20"):
            headers = {"Authorization": f"Token {token}"}
            request = urllib.request.Request(base + path, headers=headers)  # noqa: S310 - http
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - ours
                bodies.append(response.read())
        same += bodies[0] == bodies[1]
    return same


def deep_cursor() -> str:
    """A feed cursor deep in every reader's history: below the oldest quarter of all
    activities, far past the 500 entries their Redis feeds hold (each reader's push authors
    posted 2,000), with the edge just above it, as a reader who paged there holds. A cursor
    names ids only, so one serves every reader."""
    from activities.ids import MAX_ID
    from feedsite.api.cursor import FeedCursor, feed_cursor_encode

    ids = Activity.objects.filter(home=True).order_by("id").values_list("id", flat=True)
    last = ids[ids.count() // 4]
    return feed_cursor_encode(FeedCursor(top=MAX_ID, last=last, edge=last + 1))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--hedging",
        action="store_true",
        help="on a Redis Cluster with replicas (make bench-read-cluster): hedged reads on vs "
        "off in alternating rounds, then a master stalled for 5 s under load",
    )
    args = parser.parse_args()
    if "postgresql" not in settings.DATABASES["default"]["ENGINE"] or not os.environ.get(
        "REDIS_URL"
    ):
        raise SystemExit(
            "bench/read.py measures what users run: set DATABASE_URL to PostgreSQL and REDIS_URL "
            "to a Redis server (make bench-read does)"
        )
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    migrate()
    apply_redis_conf()
    cap = 500
    # Pull authors have ~0.6 x readers followers, push authors ~0.1 x: at any size the threshold
    # lies between (5,000 at 10,000 readers), or the "pull" authors would be in no Redis feed.
    threshold = min(THRESHOLD, args.readers // 2)
    feed_settings_update(
        celebrity_threshold=threshold, feed_max_length=cap, aggregation_window_seconds=3600
    )
    t0 = time.perf_counter()
    tokens = build(args.readers, 200, 5, 20, 100, cap, seed=7)
    print(
        f"setup: {args.readers} readers, feeds of {cap}, 20 push + 3 pull authors each, "
        f"in {time.perf_counter() - t0:.0f}s; generator {generator}",
        flush=True,
    )
    deep = deep_cursor()
    tokens_file = Path(settings.VAR_DIR) / "bench-read-tokens.txt"
    tokens_file.write_text("\n".join(tokens) + "\n")
    env = dict(
        os.environ,
        DEBUG="0",
        FEEDSITE_URLCONF="bench.urls_sql",
        FEEDSITE_WSGI_APP="bench.wsgi_sql:application",
        FEEDSITE_SECURE_SSL_REDIRECT="0",
        FEEDSITE_THROTTLE_FEED="100000000/min",
    )

    def measure(
        path: str, seconds: float, concurrency: int = args.concurrency, port: int = args.port
    ) -> Run:
        url = f"http://127.0.0.1:{port}{path}"
        if generator == "wrk":
            return run_wrk(url, tokens_file, concurrency, seconds)
        return run_python(url, tokens, concurrency, seconds)

    if args.hedging:
        hedging(args, env, tokens, measure)
        return
    log = open(Path(settings.VAR_DIR) / "bench-read-server.log", "w")  # noqa: SIM115
    with serving(env, port=args.port, stdout=log):
        base = f"http://127.0.0.1:{args.port}"
        # Warm every reader once (token entry, pull-author list), as on a server in service.
        t0 = time.perf_counter()
        asyncio.run(load(f"{base}/api/feed/?limit=20", tokens, args.concurrency, 3600, True))
        print(f"warm-up: {len(tokens)} readers in {time.perf_counter() - t0:.0f}s", flush=True)
        checked = min(20, len(tokens))
        same = same_json(base, tokens, checked)
        print(
            f"same_json={same}/{checked} (first pages of the Redis read and the SQL rival, "
            "byte for byte)",
            flush=True,
        )
        for path in ("/bench/floor/", "/api/feed/?limit=20", "/bench/feed-sql/?limit=20"):
            measure(path, args.warmup)
        for path in NOTIFICATION_PATHS:
            measure(path, min(args.warmup, 2))
        # Interleaved rounds: the shared machine's load drifts over minutes, so each round
        # measures the three endpoints back to back and the ratio is taken within a round.
        rounds = []
        for _ in range(args.rounds):
            step = args.seconds / args.rounds
            rounds.append(
                (
                    measure("/bench/floor/", min(step, 5)),
                    measure("/api/feed/?limit=20", step),
                    measure("/bench/feed-sql/?limit=20", step),
                    *(measure(path, min(step, 5)) for path in NOTIFICATION_PATHS),
                    # A light load: what one request waits when little queues before it.
                    measure("/api/feed/?limit=20", min(step, 5), concurrency=LIGHT),
                    # A page past what Redis holds (PostgreSQL: feeds.read.feed_page).
                    measure(f"/api/feed/?limit=20&cursor={deep}", min(step, 5)),
                )
            )
    floor, feed, sql, notes, counts, light, past = (
        Run.combine([r[i] for r in rounds]) for i in range(7)
    )
    ratio = feed.rps / sql.rps
    print(floor.line("server floor (static JSON view, whole Django stack)"))
    print(feed.line("/api/feed/ (Redis, merged + aggregated)"))
    print(sql.line("SQL fan-out on read (one LATERAL query, bodies in it), same prelude"))
    print(notes.line("/api/notifications/ (40 each, grouped, seen/read)"))
    print(counts.line("/api/notifications/counts/ (one Redis round trip)"))
    print(past.line("/api/feed/ past the Redis feed (PostgreSQL, same aggregation)"))
    for i, (fl, f, s, *_) in enumerate(rounds, 1):
        print(f"round {i}: floor {fl.rps:.0f} req/s, feed {f.rps:.0f}, sql {s.rps:.0f}")
    per_round = [f.rps / s.rps for _, f, s, *_ in rounds]
    print(
        "ratio per round: "
        + " ".join(f"{r:.2f}" for r in per_round)
        + f" (median {statistics.median(per_round):.2f})"
    )
    p50, p99 = pct(feed.server_ms, 0.5), pct(feed.server_ms, 0.99)
    print(
        f"p50_ms={p50:.2f} p99_ms={p99:.2f} rps={feed.rps:.0f} "
        f"sql_p50_ms={pct(sql.server_ms, 0.5):.2f} sql_rps={sql.rps:.0f} "
        f"ratio={ratio:.2f} floor_rps={floor.rps:.0f} "
        f"notifications_p50_ms={pct(notes.server_ms, 0.5):.2f} notifications_rps={notes.rps:.0f} "
        f"counts_p50_ms={pct(counts.server_ms, 0.5):.2f} counts_rps={counts.rps:.0f} "
        f"deep_p50_ms={pct(past.server_ms, 0.5):.2f} deep_p99_ms={pct(past.server_ms, 0.99):.2f} "
        f"deep_rps={past.rps:.0f} generator={generator}"
    )
    c = args.concurrency
    print(
        f"client_c{c}_p50_ms={feed.client_p50_ms:.2f} client_c{c}_p99_ms={feed.client_p99_ms:.2f} "
        f"client_c{LIGHT}_p50_ms={light.client_p50_ms:.2f} "
        f"client_c{LIGHT}_p99_ms={light.client_p99_ms:.2f}"
    )


def _stall(pid: int, after: float, seconds: float) -> threading.Thread:
    """SIGSTOP ``pid`` ``after`` seconds from now for ``seconds`` (a thread; SIGCONT at the end)."""

    def run() -> None:
        time.sleep(after)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def hedging(args, env: dict[str, str], tokens: list[str], measure) -> None:
    """The read on a cluster with replicas, hedging on (FEEDSITE_READ_HEDGE_MS=auto) and off,
    two servers side by side measured in alternating rounds (the ratio of their medians: what
    hedging costs when no node is slow); then, on each, a master stalled (SIGSTOP, 5 s, under
    cluster-node-timeout) in the middle of a run: its p99, the pages served partial and the
    hedges won."""
    if not store.is_cluster():
        raise SystemExit("--hedging needs REDIS_URL=redis+cluster:// (make bench-read-cluster)")
    client = store.client()
    replicated = all(len(n) > 1 for n in client.nodes_manager.slots_cache.values())
    print(f"cluster: {len(client.get_primaries())} masters, replicas: {replicated}", flush=True)
    ports = {"on": args.port, "off": args.port + 1}
    envs = {
        "on": dict(env, FEEDSITE_READ_HEDGE_MS="auto"),
        "off": dict(env, FEEDSITE_READ_HEDGE_MS="off"),
    }
    logs = {k: open(Path(settings.VAR_DIR) / f"bench-read-hedge-{k}.log", "w") for k in ports}  # noqa: SIM115
    with contextlib.ExitStack() as stack:
        for k, port in ports.items():
            stack.enter_context(serving(envs[k], port=port, stdout=logs[k]))
        for port in ports.values():
            asyncio.run(
                load(
                    f"http://127.0.0.1:{port}/api/feed/?limit=20",
                    tokens,
                    args.concurrency,
                    3600,
                    True,
                )
            )
            measure_at(measure, port, "/api/feed/?limit=20", args.warmup)
        store.flush_buffered()
        hedges_before = {k: store.read_stat(f"read_hedges_{k}") for k in ("sent", "won")}
        rounds = []
        for i in range(args.rounds):
            order = ("on", "off") if i % 2 == 0 else ("off", "on")
            got = {
                k: measure_at(measure, ports[k], "/api/feed/?limit=20", args.seconds / args.rounds)
                for k in order
            }
            rounds.append(got)
            print(
                f"round {i + 1}: hedging on {got['on'].rps:.0f} req/s, off {got['off'].rps:.0f} "
                f"(ratio {got['on'].rps / got['off'].rps:.3f})",
                flush=True,
            )
        time.sleep(1.5)  # the servers' buffered counters
        measure_at(measure, ports["on"], "/api/feed/?limit=20", 1)
        hedged = {k: store.read_stat(f"read_hedges_{k}") - hedges_before[k] for k in hedges_before}
        served = sum(r["on"].requests for r in rounds)
        print(
            f"healthy rounds, hedging on: {hedged['sent']} hedges sent for {served} reads "
            f"({hedged['sent'] / max(served, 1):.3f} per read), {hedged['won']} won",
            flush=True,
        )
        on = statistics.median(r["on"].rps for r in rounds)
        off = statistics.median(r["off"].rps for r in rounds)
        for k in ("on", "off"):
            print(
                Run.combine([r[k] for r in rounds]).line(f"/api/feed/ on the cluster, hedging {k}")
            )
        print(
            f"hedging on / off: {on:.0f} / {off:.0f} req/s = {on / off:.3f} (medians of {len(rounds)} alternating rounds)"
        )
        # A master stalled for 5 s in the middle of an 8 s run (cluster-node-timeout 15 s).
        busy = client.get_node_from_key(store.pull_version_key()).name
        master = next(n for n in client.get_primaries() if n.name != busy)
        pid = int(master.redis_connection.info("server")["process_id"])
        for k in ("on", "off"):
            store.flush_buffered()
            before = {
                s: store.read_stat(s)
                for s in ("read_partial", "read_hedges_sent", "read_hedges_won")
            }
            staller = _stall(pid, 1.5, 5.0)
            run = measure_at(measure, ports[k], "/api/feed/?limit=20", 8)
            staller.join()
            time.sleep(1.5)  # the servers' buffered counters
            measure_at(measure, ports[k], "/api/feed/?limit=20", 1)
            after = {s: store.read_stat(s) - before[s] for s in before}
            print(
                f"master {master.name} stalled 5 s, hedging {k}: {run.requests} requests, "
                f"{run.errors} errors, {run.rps:.0f} req/s, server p50 {pct(run.server_ms, 0.5):.2f} "
                f"ms p99 {pct(run.server_ms, 0.99):.2f} ms, client p99 {run.client_p99_ms:.1f} ms; "
                f"partial pages {after['read_partial']}, hedges sent {after['read_hedges_sent']} "
                f"won {after['read_hedges_won']} (read deadline {settings.FEEDSITE_READ_DEADLINE_MS} ms)",
                flush=True,
            )
            time.sleep(2)  # the node's suspicion (1 s) passes


def measure_at(measure, port: int, path: str, seconds: float) -> Run:
    return measure(path, seconds, port=port)


if __name__ == "__main__":
    main()
