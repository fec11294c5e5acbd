"""Fan-out benchmark: publish-to-done for one activity of an author with N followers, through a
real Celery worker, against a bare redis-py pipelined ZADD loop over the same keys in the same run.

    make bench-fanout                      (embedded Redis, SQLite unless DATABASE_URL is set)
    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/fanout.py --followers 100000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from common import (
    Worker,
    apply_redis_conf,
    delete_prefixed,
    ensure_follows,
    ensure_users,
    median,
    migrate,
)

from activities.services import activity_publish
from feeds import store
from feeds.models import FanoutJob
from feeds.services import feed_settings_update


def activate_feeds(follower_ids: list[int]) -> None:
    """Every follower an active reader with a built feed (fan-out skips missing feeds)."""
    r = store.client()
    for start in range(0, len(follower_ids), 5000):
        pipe = r.pipeline(transaction=False)
        for uid in follower_ids[start : start + 5000]:
            pipe.zadd(store.feed_key(uid), {store.SENTINEL: 0})
        pipe.execute()


def publish_and_wait(author_id: int, n: int) -> tuple[float, FanoutJob]:
    t0 = time.perf_counter()
    activity, _ = activity_publish(
        actor_id=author_id, data={"verb": "starred", "object_type": "project", "object_id": f"b{n}"}
    )
    while True:
        job = FanoutJob.objects.filter(activity_id=activity.id, kind="publish").first()
        if job is not None and job.state in ("done", "failed"):
            return time.perf_counter() - t0, job
        time.sleep(0.005)


def bare_pipeline(follower_ids: list[int], cap: int, batch: int, value: int) -> float:
    """The floor: one ZADD per key (no trim, no bookkeeping), pipelined per batch, one process."""
    r = store.client()
    member = store.encode_id(value)  # the same member our fan-out writes
    t0 = time.perf_counter()
    for start in range(0, len(follower_ids), batch):
        pipe = r.pipeline(transaction=False)
        for uid in follower_ids[start : start + batch]:
            pipe.zadd(store.feed_key(uid), {member: 0})
        pipe.execute()
    return time.perf_counter() - t0


def bytes_per_entry(follower_ids: list[int], cap: int, feeds: int = 1000) -> float:
    """Redis memory per entry of full feeds (cap entries each), measured with MEMORY USAGE."""
    r = store.client()
    base = 2**40  # ids of realistic size: ~ 2025 in ms << 10
    sample = follower_ids[:feeds]
    pipe = r.pipeline(transaction=False)
    for uid in sample:
        pipe.zadd(store.feed_key(uid), {store.encode_id(base + i * 7919): 0 for i in range(cap)})
    pipe.execute()
    pipe = r.pipeline(transaction=False)
    for uid in sample:
        pipe.memory_usage(store.feed_key(uid), samples=0)
    total = sum(pipe.execute())
    return total / (len(sample) * cap)


def measure_fanout(author_id: int, follower_ids: list[int], runs: int, concurrency: int):
    """Publish-to-done through a real worker with ``concurrency`` processes: (seconds, job)."""
    delete_prefixed()
    activate_feeds(follower_ids)
    worker = Worker(concurrency=concurrency)
    try:
        publish_and_wait(author_id, -1)  # warm-up: imports, connections, prefork children
        ours, job = [], None
        for n in range(runs):
            seconds, job = publish_and_wait(author_id, n)
            assert job.state == "done" and job.batches_done == job.batches_total, job
            assert job.skipped == 0, f"{job.skipped} followers skipped: feeds missing"
            ours.append(seconds)
            print(f"run {n}: {seconds:.3f}s  batches={job.batches_total}", flush=True)
    finally:
        worker.stop()
    return ours, job


def cluster_bytes_per_entry(args) -> float | None:
    """bytes_per_entry on a fresh 3-master Redis Cluster (feedsite.devcluster), measured by
    this script in a child process with REDIS_URL pointing at it."""
    from feedsite.devcluster import start_cluster

    with start_cluster(3) as cluster:
        env = {**os.environ, "REDIS_URL": cluster.url}
        cmd = [sys.executable, __file__, "--followers", str(args.followers), "--cap"]
        cmd += [str(args.cap), "--memory-only"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("bytes_per_entry="):
            return float(line.split("=", 1)[1])
    print(out.stdout[-2000:], out.stderr[-2000:])
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--followers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=5000, help="fanout_batch_size (its default)")
    parser.add_argument("--cap", type=int, default=500)
    parser.add_argument(
        "--concurrency", type=int, default=3
    )  # batches wait on I/O ~30%: 3 on 2 cores
    parser.add_argument("--memory-only", action="store_true", help="only bytes/entry (cluster)")
    parser.add_argument("--fanout-only", action="store_true", help="only publish-to-done (scale)")
    parser.add_argument("--no-cluster", action="store_true", help="skip the cluster memory figure")
    args = parser.parse_args()

    migrate()
    conf = apply_redis_conf()
    t0 = time.perf_counter()
    author_id = ensure_users("bench-author", 1)[0]
    follower_ids = ensure_users("bench-fan", args.followers)
    if args.memory_only:
        delete_prefixed()
        print(f"bytes_per_entry={bytes_per_entry(follower_ids, args.cap):.2f}")
        delete_prefixed()
        return
    ensure_follows(follower_ids, author_id)
    print(f"setup: {args.followers} followers in {time.perf_counter() - t0:.1f}s; redis {conf}")
    feed_settings_update(
        celebrity_threshold=10**9, fanout_batch_size=args.batch, feed_max_length=args.cap
    )
    ours, job = measure_fanout(author_id, follower_ids, args.runs, args.concurrency)
    seconds = median(ours)
    if args.fanout_only:
        delete_prefixed()
        print(f"seconds={seconds:.3f} deliveries_per_s={args.followers / seconds:.0f}")
        return
    bare = [bare_pipeline(follower_ids, args.cap, args.batch, 10**12 + n) for n in range(args.runs)]
    delete_prefixed()
    per_entry = bytes_per_entry(follower_ids, args.cap)
    delete_prefixed()
    # The same feeds under Redis's default sorted-set limit (128 entries): a skiplist per feed.
    from feeds import store

    store.client().config_set("zset-max-ziplist-entries", "128")
    per_entry_default = bytes_per_entry(follower_ids, args.cap)
    delete_prefixed()
    apply_redis_conf()
    on_cluster = None if args.no_cluster else cluster_bytes_per_entry(args)
    print(
        f"memory: {per_entry:.1f} bytes/entry with config/redis.conf, "
        f"{per_entry_default:.1f} with Redis defaults ({per_entry_default / per_entry:.1f}x); "
        f"on a 3-master Redis Cluster {on_cluster if on_cluster is None else f'{on_cluster:.1f}'}"
    )
    bare_s = median(bare)
    ours_rate, bare_rate = args.followers / seconds, args.followers / bare_s
    print(
        f"followers={args.followers} batches={job.batches_total} publish-to-done median {seconds:.3f}s "
        f"({ours_rate:,.0f} deliveries/s); bare pipelined ZADD loop median {bare_s:.3f}s "
        f"({bare_rate:,.0f}/s); ratio {ours_rate / bare_rate:.2f}; {per_entry:.1f} bytes/entry"
    )
    print(
        f"followers={args.followers} batches={job.batches_total} seconds={seconds:.3f} "
        f"deliveries_per_s={ours_rate:.0f} bare_per_s={bare_rate:.0f} "
        f"ratio={ours_rate / bare_rate:.2f} bytes_per_entry={per_entry:.1f} "
        f"cluster_bytes_per_entry={on_cluster if on_cluster is None else f'{on_cluster:.1f}'}"
    )


if __name__ == "__main__":
    main()
