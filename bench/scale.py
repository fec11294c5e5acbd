"""Workers that scale: fan-out deliveries per second with 1, 2 and 4 worker processes, on one
Redis, on a 3-master Redis Cluster and on 3 masters with a replica each (feedsite.devcluster,
started here; there a batch counts done once a replica has its writes: WAIT, see
feeds.store.failover), printed as a table.
Each cell is bench/fanout.py --fanout-only in a child process (publish-to-done median of one
author's activity to N followers whose feeds are full, at feed_max_length, so every add pays its
trim, through a real Celery worker whose prefork pool has that many processes); the broker is
the single Redis in both columns.

    make bench-scale
    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/scale.py --followers 100000

On a 2-core machine the columns show the cost of the layout, not more hardware: 4 processes
share 2 cores with each other and with 3 Redis nodes. Past one machine each worker process and
each node brings its own core.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def run_cell(redis_url: str, broker: str, workers: int, args) -> float | None:
    env = {**os.environ, "REDIS_URL": redis_url, "CELERY_BROKER_URL": broker}
    cmd = [sys.executable, str(HERE / "fanout.py"), "--fanout-only", "--followers"]
    cmd += [str(args.followers), "--runs", str(args.runs), "--concurrency", str(workers)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("seconds="):
            return float(line.split("deliveries_per_s=")[1].split()[0])
    print(
        f"cell failed ({workers} workers, {redis_url}):\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}"
    )
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--followers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    single = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/5"
    broker = os.environ.get("CELERY_BROKER_URL") or single
    from feedsite.devcluster import start_cluster

    counts = [int(w) for w in args.workers.split(",")]
    table: dict[int, dict[str, float | None]] = {w: {} for w in counts}
    for w in counts:
        table[w]["single"] = run_cell(single, broker, w, args)
        print(f"{w} worker process(es), one Redis: {table[w]['single']}", flush=True)
    with start_cluster(3) as cluster:
        for w in counts:
            table[w]["cluster"] = run_cell(cluster.url, broker, w, args)
            print(f"{w} worker process(es), cluster: {table[w]['cluster']}", flush=True)
    with start_cluster(3, replicas=1, node_timeout_ms=15000) as cluster:
        for w in counts:
            table[w]["replicas"] = run_cell(cluster.url, broker, w, args)
            print(f"{w} worker process(es), cluster + replicas: {table[w]['replicas']}", flush=True)

    def fmt(v: float | None) -> str:
        return "failed" if v is None else f"{v:,.0f}"

    print(
        f"\nfan-out deliveries/s into full feeds, {args.followers:,} followers, "
        f"median of {args.runs} runs"
    )
    print(
        "| worker processes | one Redis | 3-master Redis Cluster | cluster / one "
        "| 3 masters + 3 replicas (WAIT) | replicas / cluster |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for w in counts:
        s, c, r = table[w]["single"], table[w]["cluster"], table[w]["replicas"]
        ratio = f"{c / s:.2f}" if s and c else "-"
        cost = f"{r / c:.2f}" if r and c else "-"
        print(f"| {w} | {fmt(s)} | {fmt(c)} | {ratio} | {fmt(r)} | {cost} |")


if __name__ == "__main__":
    main()
