"""What fan-out's WAIT costs on Redis Cluster with replicas (issue 28, point 4): publish-to-done
of one activity to N followers whose feeds are full (feed_max_length entries: every add pays its
trim), through a real Celery worker, with FEEDSITE_FANOUT_REPLICATE on (each batch, and the
job's author-side writes, wait until one replica of every master written to has them:
feeds.store.failover) and off, in alternating rounds on one fresh cluster of 3 masters with a
replica each (feedsite.devcluster, started here; the broker is the single Redis). Beside it, the
alternative of a check after the job: one pass over every recipient's feed asking whether the
activity is there (pipelined ZSCORE, 1,000 a round trip), timed after each job.

    DATABASE_URL=postgres://... python bench/replicate.py [--followers 20000] [--batch 5000]

Prints a line per round and ``replicate_on_s= replicate_off_s= ratio= check_after_job_s=``
(ratio: deliveries/s with the WAIT over without; medians of every publish of each mode).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--followers", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5000, help="fanout_batch_size (its default)")
    parser.add_argument("--cap", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of (on, off), alternating")
    parser.add_argument("--per-round", type=int, default=2, help="publishes per mode and round")
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def parent(args: argparse.Namespace) -> int:
    """A fresh cluster with replicas, and this script again inside it."""
    sys.path.insert(0, str(HERE.parent))
    from feedsite.devcluster import start_cluster

    broker = os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/5"
    with start_cluster(3, replicas=1) as cluster:
        env = {
            **os.environ,
            "REDIS_URL": cluster.url,
            "CELERY_BROKER_URL": broker,
            "DATABASE_URL": os.environ.get("DATABASE_URL")
            or "postgres://postgres@127.0.0.1:5432/feedsite_bench",
        }
        return subprocess.call([sys.executable, __file__, "--child", *sys.argv[1:]], env=env)


def check_after_job(follower_ids: list[int], activity_id: int) -> tuple[float, int]:
    """One pass over every recipient's feed: (seconds, feeds without the activity)."""
    from feeds import store

    r = store.client()
    member = store.encode_id(activity_id)
    missing = 0
    started = time.perf_counter()
    for start in range(0, len(follower_ids), 1000):
        pipe = r.pipeline(transaction=False)
        for uid in follower_ids[start : start + 1000]:
            pipe.zscore(store.feed_key(uid), member)
        missing += sum(1 for score in pipe.execute() if score is None)
    return time.perf_counter() - started, missing


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    from common import (
        Worker,
        apply_redis_conf,
        delete_prefixed,
        ensure_follows,
        ensure_users,
        median,
        migrate,
    )
    from fanout import fill_feeds, publish_and_wait

    from feeds import store
    from feeds.services import feed_settings_update

    migrate()
    apply_redis_conf()
    replicas = len(store.client().get_replicas())
    assert replicas == 3, f"needs a replica behind each master, found {replicas}"
    author = ensure_users("bench-author", 1)[0]
    fans = ensure_users("bench-fan", args.followers)
    ensure_follows(fans, author)
    feed_settings_update(
        celebrity_threshold=10**9, fanout_batch_size=args.batch, feed_max_length=args.cap
    )
    delete_prefixed()
    fill_feeds(fans, args.cap)
    seconds: dict[str, list[float]] = {"1": [], "0": []}
    checks: list[float] = []
    n = 0
    for round_no in range(args.rounds):
        for mode in ("1", "0") if round_no % 2 == 0 else ("0", "1"):
            os.environ["FEEDSITE_FANOUT_REPLICATE"] = mode  # the worker's environment
            worker = Worker(concurrency=args.concurrency)
            try:
                publish_and_wait(author, -1 - n)  # warm-up: imports, connections, children
                for _ in range(args.per_round):
                    n += 1
                    took, job = publish_and_wait(author, n)
                    assert job.state == "done" and job.skipped == 0, job
                    seconds[mode].append(took)
                    check, missing = check_after_job(fans, job.activity_id)
                    assert missing == 0, f"{missing} feeds lack the activity"
                    checks.append(check)
                    print(
                        f"round {round_no} replicate={mode}: {took:.3f}s "
                        f"({args.followers / took:,.0f} deliveries/s, {job.batches_total} "
                        f"batches); a check after the job {check:.3f}s",
                        flush=True,
                    )
            finally:
                worker.stop()
    delete_prefixed()
    on, off, check = median(seconds["1"]), median(seconds["0"]), median(checks)
    print(
        f"replicate_on_s={on:.3f} replicate_off_s={off:.3f} ratio={off / on:.3f} "
        f"deliveries_per_s_on={args.followers / on:.0f} deliveries_per_s_off="
        f"{args.followers / off:.0f} check_after_job_s={check:.3f} "
        f"check_vs_job={check / off:.2f} followers={args.followers} batch={args.batch} "
        f"cap={args.cap} publishes_per_mode={len(seconds['1'])}",
        flush=True,
    )


if __name__ == "__main__":
    arguments = parse()
    if arguments.child:
        child(arguments)
    else:
        raise SystemExit(parent(arguments))
