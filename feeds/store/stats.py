"""Counters and latency histograms, kept in Redis so every process adds to one set (/metrics)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from .connection import best_effort, client, is_cluster, take_hedge_counts
from .keys import stats_key


def count_stat(name: str, amount: int = 1) -> None:
    client().incrby(stats_key(name), amount)


# Latency histograms kept in Redis hashes, so every process (web workers, pool children) adds to
# one set of counters that /metrics reads. Bucket bounds in milliseconds.
LATENCY_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


def _histogram_commands(name: str, values: Sequence[float]) -> list[tuple[str, tuple]]:
    """(key, command) adding latency observations (ms) to a histogram hash: one HINCRBY per
    bucket touched, the sum and the count. Pure."""
    key = stats_key(name)
    buckets: dict[str, int] = {}
    for value in values:
        bucket = next((f"le_{b}" for b in LATENCY_BUCKETS_MS if value <= b), "le_inf")
        buckets[bucket] = buckets.get(bucket, 0) + 1
    commands: list[tuple[str, tuple]] = [
        (key, ("HINCRBY", key, bucket, n)) for bucket, n in buckets.items()
    ]
    commands.append((key, ("HINCRBYFLOAT", key, "sum", sum(values) / 1000)))
    commands.append((key, ("HINCRBY", key, "count", len(values))))
    return commands


def _queue_histogram(pipe, name: str, values: Sequence[float]) -> None:
    for _, command in _histogram_commands(name, values):
        pipe.execute_command(*command)


def observe(name: str, ms: float, counters: dict[str, int] | None = None) -> None:
    """One observation of a latency histogram (and optional counters): one round trip."""
    pipe = client().pipeline(transaction=False)
    _queue_histogram(pipe, name, [ms])
    for counter, amount in (counters or {}).items():
        pipe.incrby(stats_key(counter), amount)
    pipe.execute()


_buffer_lock = threading.Lock()


_buffered: dict[str, list[float]] = {}


_flushed_at = 0.0


def observe_buffered(name: str, ms: float, flush_every: float = 1.0) -> None:
    """observe() for hot paths: observations are kept in the process and written at most once a
    second, in one round trip, instead of one round trip per request."""
    with _buffer_lock:
        _buffered.setdefault(name, []).append(ms)
    flush_buffered(older_than=flush_every)


def flush_buffered(older_than: float = 0.0) -> None:
    global _flushed_at
    with _buffer_lock:
        now = time.monotonic()
        if now - _flushed_at < older_than:
            return
        pending = {k: v for k, v in _buffered.items() if v}
        _buffered.clear()
        _flushed_at = now
    hedges = {f"read_hedges_{k}": n for k, n in take_hedge_counts().items() if n}
    if is_cluster():  # metrics of the read path never hold a read up on a slow node
        best_effort(
            *(c for hist, v in pending.items() for c in _histogram_commands(hist, v)),
            *((stats_key(k), ("INCRBY", stats_key(k), n)) for k, n in hedges.items()),
        )
        return
    pipe = client().pipeline(transaction=False)
    for hist, values in pending.items():
        _queue_histogram(pipe, hist, values)
    pipe.execute()


def count_stat_best_effort(name: str, amount: int = 1) -> None:
    """count_stat from a read path: best effort on a cluster (see connection.best_effort)."""
    key = stats_key(name)
    best_effort((key, ("INCRBY", key, amount)))


def read_histogram(name: str) -> dict[str, float]:
    raw: dict[bytes, bytes] = client().hgetall(stats_key(name))  # type: ignore[assignment]
    return {k.decode(): float(v) for k, v in raw.items()}


def read_stat(name: str) -> int:
    return int(client().get(stats_key(name)) or 0)
