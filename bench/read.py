"""Read benchmark: GET /api/feed/?limit=20 under load (concurrency 16, 30 s) against uvicorn,
server-side latency from the Server-Timing header, and fan-out on read in SQL on the same data
and stack for comparison.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/read.py
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import os
import random
import subprocess
import sys
import time
from datetime import timedelta

from common import ROOT, apply_redis_conf, delete_prefixed, ensure_users, median, migrate

from activities.ids import make_id
from activities.models import Activity
from activities.selectors import activity_to_dict, encode_body
from feeds import store
from feeds.conf import feed_settings_update
from follows.models import Follow, UserStats

VERBS = ["starred", "commented", "forked", "released"]
THRESHOLD = 5000


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
        Activity.objects.bulk_create(acts, batch_size=5000, ignore_conflicts=True)
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
        pipe.zadd(store.timeline_key(author), {str(i): i for i in ids[:cap]})
    pipe.execute()
    pull = set(pull_ids)
    for n, (reader, authors) in enumerate(follows.items()):
        newest = heapq.nlargest(
            cap, (i for a in authors if a not in pull for i in by_actor.get(a, [])[:cap])
        )
        pipe.zadd(store.feed_key(reader), {str(i): i for i in newest})
        if n % 100 == 99:
            pipe.execute()
    pipe.execute()
    from rest_framework.authtoken.models import Token

    from feedsite.api.auth import new_token_key

    have = set(Token.objects.filter(user_id__in=reader_ids).values_list("user_id", flat=True))
    Token.objects.bulk_create(
        [Token(user_id=u, key=new_token_key(u)) for u in reader_ids if u not in have],
        batch_size=5000,
    )
    return list(Token.objects.filter(user_id__in=reader_ids).values_list("key", flat=True))


async def load(
    url: str, tokens: list[str], concurrency: int, seconds: float
) -> tuple[list[float], list[float], int]:
    """A closed-loop load generator: `concurrency` keep-alive HTTP/1.1 connections, each sending
    the next request when the last answer is in. Plain asyncio streams: a full HTTP client
    library cost more CPU than the server it measured, on the same 2 cores."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    server_ms: list[float] = []
    client_ms: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def one(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                writer.write(
                    f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                    f"Authorization: Token {rng.choice(tokens)}\r\n\r\n".encode()
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


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--web-workers", type=int, default=2)
    args = parser.parse_args()
    migrate()
    apply_redis_conf()
    cap = 500
    feed_settings_update(
        celebrity_threshold=THRESHOLD, feed_max_length=cap, aggregation_window_seconds=3600
    )
    t0 = time.perf_counter()
    tokens = build(args.readers, 200, 5, 20, 100, cap, seed=7)
    print(
        f"setup: {args.readers} readers, feeds of {cap}, 3 pull authors each, in {time.perf_counter() - t0:.0f}s"
    )
    env = dict(
        os.environ,
        FEEDSITE_URLCONF="bench.urls_sql",
        FEEDSITE_SECURE_SSL_REDIRECT="0",
        FEEDSITE_THROTTLE_FEED="100000/min",
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "feedsite.asgi:application",
            "--port",
            str(args.port),
            "--workers",
            str(args.web_workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{args.port}"
        import httpx

        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        # Warm-up: auth and pull-author caches of the 10k readers, as on a server in service.
        asyncio.run(load(f"{base}/api/feed/?limit=20", tokens, args.concurrency, 20))
        feed, feed_client, feed_err = asyncio.run(
            load(f"{base}/api/feed/?limit=20", tokens, args.concurrency, args.seconds)
        )
        asyncio.run(load(f"{base}/bench/feed-sql/?limit=20", tokens, args.concurrency, 3))
        sql, sql_client, sql_err = asyncio.run(
            load(f"{base}/bench/feed-sql/?limit=20", tokens, args.concurrency, args.seconds)
        )
    finally:
        server.terminate()
        server.wait(20)
    p50, p99, sql_p50, sql_p99 = pct(feed, 0.5), pct(feed, 0.99), pct(sql, 0.5), pct(sql, 0.99)
    rps = len(feed_client) / args.seconds
    print(
        f"/api/feed/ (Redis, merged + aggregated): {len(feed)} requests, {feed_err} errors, {rps:.0f} req/s, "
        f"server p50 {p50:.2f} ms p99 {p99:.2f} ms; client p50 {median(feed_client):.1f} ms"
    )
    print(
        f"SQL fan-out on read (LATERAL, index-only): {len(sql)} requests, {sql_err} errors, "
        f"{len(sql_client) / args.seconds:.0f} req/s, server p50 {sql_p50:.2f} ms p99 {sql_p99:.2f} ms"
    )
    print(
        f"p50_ms={p50:.2f} p99_ms={p99:.2f} rps={rps:.0f} sql_p50_ms={sql_p50:.2f} sql_p99_ms={sql_p99:.2f} "
        f"ratio={sql_p50 / p50:.2f}"
    )


if __name__ == "__main__":
    main()
