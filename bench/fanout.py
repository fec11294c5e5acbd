"""Fan-out benchmark: publish-to-done for one activity of an author with N followers, through a
real Celery worker, on FULL feeds (every follower's feed at feed_max_length, as real feeds sit:
every add pays a trim), against Redis' own floor for the same job timed in the same run: one EVAL
per 5,000 keys doing ZADD + trim inside Redis in the previous (oldest-first) layout, no
database, no Celery. Runs alternate (ours, floor, ours, ...) and medians are compared.

    make bench-fanout                      (the machine's PostgreSQL and Redis unless DATABASE_URL /
                                            REDIS_URL say otherwise)
    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/fanout.py --followers 100000

Prints ``full_feeds=1 seconds= floor_seconds= ratio_vs_floor=`` (floor seconds / ours: above 1 is
faster than the floor) and bytes per entry (MEMORY USAGE of a full feed / feed_max_length); the
second line is the earlier figure: feeds that hold only their built marker (no trim), against a
bare pipelined ZADD loop.

    python bench/fanout.py --shared [--followers 100000]

Two sources in one job (issue 27): the author has N followers and the activity's object has N
followers, half of them the author's too (1.5 N distinct recipients), on full feeds; measured
against the author-only run (N followers) in the same run, alternating. Prints
``shared=1 ... deliveries_per_s= single_deliveries_per_s= ratio=`` (the two-source run's
deliveries per second over the single-source run's: the target is 0.8 or more) and checks that
every recipient was written once: the job's recipients and the batches' delivered counts are
1.5 N, and Redis ran the add script once per recipient's feed (INFO commandstats: one ZCARD a
write, besides the author's own timeline and feed and the object's timeline).
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
from feeds.models import FanoutBatch, FanoutJob
from feeds.services import feed_settings_update


def activate_feeds(follower_ids: list[int]) -> None:
    """Every follower an active reader with a built feed (fan-out skips missing feeds)."""
    r = store.client()
    for start in range(0, len(follower_ids), 5000):
        pipe = r.pipeline(transaction=False)
        for uid in follower_ids[start : start + 5000]:
            pipe.zadd(store.feed_key(uid), {store.SENTINEL: 0})
        pipe.execute()


def older_ids(cap: int) -> list[int]:
    """``cap`` realistic activity ids from the past day, all older than anything published now."""
    from datetime import UTC, datetime, timedelta

    from activities.ids import make_id

    day_ago = datetime.now(UTC) - timedelta(days=1)
    return [make_id(day_ago + timedelta(seconds=97 * i), low=0) for i in range(cap)]


def restore_everywhere(keys: list[str], members: dict[bytes, int]) -> None:
    """Every key holds exactly ``members``: one full sorted set built once, DUMPed, then RESTOREd
    under every key (a RESTORE copies the listpack: 100,000 feeds of 500 in seconds, where 500
    ZADDs a feed take minutes)."""
    r = store.client()
    template = f"{store.prefix()}:bench-template"
    r.delete(template)
    r.zadd(template, members)
    blob = r.dump(template)
    r.delete(template)
    for start in range(0, len(keys), 2000):
        pipe = r.pipeline(transaction=False)
        for key in keys[start : start + 2000]:
            pipe.restore(key, 0, blob, replace=True)
        pipe.execute()


def fill_feeds(follower_ids: list[int], cap: int) -> None:
    """Every follower's feed full: ``cap`` ids older than the ones the runs publish (a full
    feed holds no built marker: it was trimmed away)."""
    members = {store.encode_id(i): 0 for i in older_ids(cap)}
    restore_everywhere([store.feed_key(u) for u in follower_ids], members)


# The reference floor: the previous layout (oldest first: the id with the top bit set, 7
# big-endian bytes, score 0) with ZADD and a trim after each add, inside Redis, one EVAL per
# 5,000 keys, pipelined. What our layout and trimming are measured against.
FLOOR_LUA = """
local cap = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, 0, ARGV[1])
  redis.call('ZREMRANGEBYRANK', key, 0, -(cap + 1))
end
return #KEYS
"""


def floor_member(activity_id: int) -> bytes:
    return (activity_id | 1 << 55).to_bytes(7, "big")


def floor_keys(n: int) -> list[str]:
    return [f"{store.prefix()}:floor:{{s{i % 1024}}}:{i}" for i in range(n)]


def fill_floor(n: int, cap: int) -> list[str]:
    keys = floor_keys(n)
    restore_everywhere(keys, {floor_member(i): 0 for i in older_ids(cap)})
    return keys


def server_floor(keys: list[str], cap: int, activity_id: int, batch: int = 5000) -> float:
    """One add to every key, server side (see FLOOR_LUA): seconds."""
    r = store.client()
    sha = r.script_load(FLOOR_LUA)
    member = floor_member(activity_id)
    t0 = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for start in range(0, len(keys), batch):
        part = keys[start : start + batch]
        pipe.execute_command("EVALSHA", sha, len(part), *part, member, cap)
    pipe.execute()
    return time.perf_counter() - t0


def check_full_feeds(follower_ids: list[int], cap: int, activity_id: int, sample: int = 1000):
    """Sampled feeds hold the newest activity and between cap and 1.05 x cap entries, and a
    full feed's bytes per entry (MEMORY USAGE / cap)."""
    import random

    r = store.client()
    picked = random.Random(7).sample(follower_ids, min(sample, len(follower_ids)))
    pipe = r.pipeline(transaction=False)
    for uid in picked:
        pipe.zscore(store.feed_key(uid), store.encode_id(activity_id))
        pipe.zcard(store.feed_key(uid))
        pipe.memory_usage(store.feed_key(uid), samples=0)
    got = pipe.execute()
    scores, sizes, memory = got[0::3], got[1::3], got[2::3]
    missing = sum(1 for s in scores if s is None)
    wrong = [n for n in sizes if not cap <= n <= cap * 1.05]
    assert missing == 0, f"{missing} of {len(picked)} sampled feeds lack the new activity"
    assert not wrong, f"{len(wrong)} sampled feeds outside [cap, 1.05 cap]: {wrong[:5]}"
    return sum(memory) / (len(memory) * cap)


def publish_and_wait(
    author_id: int, n: int, obj: tuple[str, str] | None = None
) -> tuple[float, FanoutJob]:
    t0 = time.perf_counter()
    object_type, object_id = obj or ("project", f"b{n}")
    activity, _ = activity_publish(
        actor_id=author_id,
        data={"verb": "starred", "object_type": object_type, "object_id": object_id},
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
    """Publish-to-done through a real worker with ``concurrency`` processes into feeds that hold
    only their built marker (the earlier, easier figure): (seconds, job)."""
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
            print(f"empty feeds, run {n}: {seconds:.3f}s  batches={job.batches_total}", flush=True)
    finally:
        worker.stop()
    return ours, job


def measure_full(author_id: int, follower_ids: list[int], args, with_floor: bool = True):
    """Publish-to-done into full feeds, alternating with the server-side floor on full feeds of
    the previous layout: (our seconds, floor seconds, last job, bytes per entry)."""
    delete_prefixed()
    fill_feeds(follower_ids, args.cap)
    floor = fill_floor(len(follower_ids), args.cap) if with_floor else []
    worker = Worker(concurrency=args.concurrency)
    ours: list[float] = []
    floors: list[float] = []
    redis_us: list[float] = []
    per_call: dict[str, list[float]] = {"zadd": [], "zremrangebyrank": [], "zcard": []}
    try:
        publish_and_wait(author_id, -1)  # warm-up: imports, connections, prefork children
        for n in range(args.runs):
            store.client().config_resetstat()
            seconds, job = publish_and_wait(author_id, n)
            stats = store.client().info("commandstats")
            redis_us.append(usec(stats, "evalsha") / len(follower_ids))
            for name, values in per_call.items():
                values.append(stats.get(f"cmdstat_{name}", {}).get("usec_per_call", 0.0))
            assert job.state == "done" and job.batches_done == job.batches_total, job
            assert job.skipped == 0, f"{job.skipped} followers skipped: feeds missing"
            ours.append(seconds)
            line = f"full feeds, run {n}: ours {seconds:.3f}s"
            if with_floor:
                floors.append(server_floor(floor, args.cap, job.activity_id))
                line += f"  floor {floors[-1]:.3f}s  ratio {floors[-1] / seconds:.2f}"
            print(line, flush=True)
    finally:
        worker.stop()
    per_entry = check_full_feeds(follower_ids, args.cap, job.activity_id)
    calls = " ".join(f"{name}_us={median(v):.2f}" for name, v in per_call.items())
    print(
        f"redis_us_per_delivery={median(redis_us):.2f} {calls} "
        "(INFO commandstats of our runs: script usec per delivery, usec per call)"
    )
    return ours, floors, job, per_entry


SHARED_OBJECT = ("bench-repo", "bench/shared")


def ensure_object_follows(user_ids: list[int], obj: tuple[str, str]) -> None:
    """Exactly ``user_ids`` follow ``obj``: rows added and removed in bulk (no signals), then
    the object's counter set to what the table holds."""
    from django.db import transaction

    from follows.models import ObjectFollow, ObjectStats

    key = {"object_type": obj[0], "object_id": obj[1]}
    want = set(user_ids)
    have = set(ObjectFollow.objects.filter(**key).values_list("user_id", flat=True))
    gone, new = sorted(have - want), sorted(want - have)
    with transaction.atomic():
        for start in range(0, len(gone), 5000):
            ObjectFollow.objects.filter(**key, user_id__in=gone[start : start + 5000])._raw_delete(
                ObjectFollow.objects.db
            )
        for start in range(0, len(new), 10000):
            ObjectFollow.objects.bulk_create(
                [ObjectFollow(user_id=u, **key) for u in new[start : start + 10000]]
            )
        count = ObjectFollow.objects.filter(**key).count()
        ObjectStats.objects.update_or_create(**key, defaults={"followers_count": count})


def measure_shared(author_id: int, fans: list[int], object_fans: list[int], args):
    """Publish-to-done into full feeds, alternating: an activity of the author about a project
    nobody follows (the author's N followers), and one about the shared object (the author's N
    and the object's N followers, half shared: 1.5 N distinct). Returns (single-source seconds,
    two-source seconds, the last two-source job, feed writes per two-source run)."""
    everyone = sorted(set(fans) | set(object_fans))
    delete_prefixed()
    fill_feeds(everyone, args.cap)
    worker = Worker(concurrency=args.concurrency)
    single: list[float] = []
    shared: list[float] = []
    zadds: list[int] = []
    job = None
    try:
        publish_and_wait(author_id, -1)  # warm-up: imports, connections, prefork children
        publish_and_wait(author_id, -2, SHARED_OBJECT)
        for n in range(args.runs):
            seconds, one = publish_and_wait(author_id, n)
            assert one.state == "done" and one.recipients == len(fans), one
            single.append(seconds)
            store.client().config_resetstat()
            seconds, job = publish_and_wait(author_id, n, SHARED_OBJECT)
            stats = store.client().info("commandstats")
            calls = stats.get("cmdstat_zcard", {}).get("calls", 0)
            assert job.state == "done" and job.batches_done == job.batches_total, job
            assert job.skipped == 0, f"{job.skipped} followers skipped: feeds missing"
            delivered = sum(FanoutBatch.objects.filter(job=job).values_list("delivered", flat=True))
            assert job.recipients == delivered == len(everyone), (job.recipients, delivered)
            # Each recipient's feed written once: the batches' delivered counts add up to the
            # distinct recipients (a user in two batches, or written for each source, would
            # count twice), and the add script, which opens every write with one ZCARD
            # (commands inside scripts are counted; not ZADD, which a Redis broker on the same
            # server sends for its unacked messages), ran once a recipient, besides the
            # author's timeline and own feed and the object's timeline. (INFO commandstats is
            # the server's: other clients of a shared server add to it.)
            assert calls >= len(everyone), (calls, len(everyone))
            if calls > len(everyone) + 3:
                print(f"  note: {calls - len(everyone) - 3} ZCARDs from other clients of Redis")
            shared.append(seconds)
            zadds.append(calls)
            print(
                f"run {n}: single {single[-1]:.3f}s ({len(fans) / single[-1]:.0f}/s)  "
                f"two sources {seconds:.3f}s ({len(everyone) / seconds:.0f}/s)  feed_writes={calls}",
                flush=True,
            )
    finally:
        worker.stop()
    check_full_feeds(everyone, args.cap, job.activity_id)
    return single, shared, job, zadds


def usec(stats: dict, command: str) -> int:
    """Redis CPU spent in ``command`` since the last CONFIG RESETSTAT (reset before each of our
    runs: the floor runs between them are not counted)."""
    return int(stats.get(f"cmdstat_{command}", {}).get("usec", 0))


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
    parser.add_argument("--no-empty", action="store_true", help="skip the empty-feed figures")
    parser.add_argument(
        "--shared",
        action="store_true",
        help="author and object with N followers each, half shared, against the author alone",
    )
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
    object_fans: list[int] = []
    if args.shared:
        half = args.followers // 2
        object_fans = follower_ids[:half] + ensure_users("bench-ofan", args.followers - half)
    ensure_object_follows(object_fans, SHARED_OBJECT)  # (none unless --shared)
    print(f"setup: {args.followers} followers in {time.perf_counter() - t0:.1f}s; redis {conf}")
    feed_settings_update(
        celebrity_threshold=10**9, fanout_batch_size=args.batch, feed_max_length=args.cap
    )
    if args.shared:
        single, shared, job, zadds = measure_shared(author_id, follower_ids, object_fans, args)
        delete_prefixed()
        recipients = len(set(follower_ids) | set(object_fans))
        single_dps = args.followers / median(single)
        shared_dps = recipients / median(shared)
        print(
            f"shared=1 followers={args.followers} object_followers={len(object_fans)} "
            f"recipients={recipients} cap={args.cap} batches={job.batches_total} "
            f"seconds={median(shared):.3f} deliveries_per_s={shared_dps:.0f} "
            f"single_seconds={median(single):.3f} single_deliveries_per_s={single_dps:.0f} "
            f"ratio={shared_dps / single_dps:.2f} written_once=1 feed_writes={median(zadds):.0f}",
            flush=True,
        )
        return
    ours, floors, job, per_entry = measure_full(
        author_id, follower_ids, args, with_floor=not args.fanout_only
    )
    seconds = median(ours)
    delete_prefixed()
    if args.fanout_only:
        print(f"seconds={seconds:.3f} deliveries_per_s={args.followers / seconds:.0f} full_feeds=1")
        return
    floor_s = median(floors)
    print(
        f"full_feeds=1 followers={args.followers} cap={args.cap} batches={job.batches_total} "
        f"seconds={seconds:.3f} floor_seconds={floor_s:.3f} ratio_vs_floor={floor_s / seconds:.2f} "
        f"bytes_per_entry={per_entry:.2f} deliveries_per_s={args.followers / seconds:.0f}",
        flush=True,
    )
    if args.no_empty:
        return
    # The earlier figure, for comparison: feeds holding only their marker, a bare ZADD loop.
    empty, job = measure_fanout(author_id, follower_ids, args.runs, args.concurrency)
    bare = [bare_pipeline(follower_ids, args.cap, args.batch, 10**12 + n) for n in range(args.runs)]
    delete_prefixed()
    # The same full feeds under Redis's default sorted-set limit (128 entries): a skiplist.
    store.client().config_set("zset-max-ziplist-entries", "128")
    per_entry_default = bytes_per_entry(follower_ids, args.cap)
    delete_prefixed()
    apply_redis_conf()
    on_cluster = None if args.no_cluster else cluster_bytes_per_entry(args)
    empty_s, bare_s = median(empty), median(bare)
    print(
        f"memory: {per_entry:.1f} bytes/entry with config/redis.conf, "
        f"{per_entry_default:.1f} with Redis defaults ({per_entry_default / per_entry:.1f}x); "
        f"on a 3-master Redis Cluster {on_cluster if on_cluster is None else f'{on_cluster:.1f}'}"
    )
    print(
        f"full_feeds=0 followers={args.followers} batches={job.batches_total} "
        f"seconds={empty_s:.3f} deliveries_per_s={args.followers / empty_s:.0f} "
        f"bare_per_s={args.followers / bare_s:.0f} ratio={bare_s / empty_s:.2f} "
        f"cluster_bytes_per_entry={on_cluster if on_cluster is None else f'{on_cluster:.1f}'}"
    )


if __name__ == "__main__":
    main()
