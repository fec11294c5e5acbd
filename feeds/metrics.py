"""Prometheus metrics, collected at scrape time from PostgreSQL, Redis and the broker, so every
process (web workers, worker pool children) is counted without a multiprocess registry."""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from . import store
from .models import FanoutDeadLetter, FanoutJob
from .tasks import queue_depths


def _histogram(name: str, doc: str, stat: str) -> HistogramMetricFamily:
    raw = store.read_histogram(stat)
    buckets, running = [], 0.0
    for bound in store.LATENCY_BUCKETS_MS:
        running += raw.get(f"le_{bound}", 0.0)
        buckets.append((str(bound / 1000), running))
    buckets.append(("+Inf", running + raw.get("le_inf", 0.0)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=raw.get("sum", 0.0))


class FeedCollector:
    def collect(self) -> Iterator:
        store.flush_buffered()  # this process's pending read latencies
        jobs = GaugeMetricFamily("feedsite_fanout_jobs", "Fan-out jobs by state", labels=["state"])
        counts = dict(FanoutJob.objects.values_list("state").annotate(n=Count("id")).order_by())
        for state in FanoutJob.State.values:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily(
            "feedsite_dead_letters_open",
            "Dead letters not yet replayed",
            value=FanoutDeadLetter.objects.filter(replayed_at__isnull=True).count(),
        )
        for stat, doc in (
            ("deliveries", "Feed entries written by fan-out"),
            ("skipped", "Fan-out recipients skipped (no feed: inactive)"),
            ("dead_letters", "Batches dead-lettered"),
            ("rebuilds", "Feeds rebuilt lazily on read"),
            ("read_partial", "Feed pages served partial: a cluster node did not answer in time"),
            ("read_hedges_sent", "Read shares also sent to a replica (hedge delay passed)"),
            ("read_hedges_won", "Read shares a replica answered before its master"),
        ):
            yield CounterMetricFamily(f"feedsite_{stat}", doc, value=store.read_stat(stat))
        topology = store.cluster_topology()
        if topology is not None:  # Redis Cluster: its shape (a failover shows here)
            for figure, doc in (
                ("masters", "Cluster masters serving slots"),
                ("replicas", "Cluster replicas (not failed)"),
                ("failed", "Cluster nodes flagged failed"),
                ("masters_without_replica", "Masters with no replica (after a failover)"),
                ("slots_ok", "Hash slots served"),
                ("epoch", "Cluster current epoch (a failover raises it)"),
            ):
                yield GaugeMetricFamily(f"feedsite_redis_cluster_{figure}", doc, topology[figure])
        yield _histogram("feedsite_fanout_batch_seconds", "Fan-out batch duration", "batch_seconds")
        yield _histogram("feedsite_feed_read_seconds", "GET /api/feed/ duration", "read_seconds")
        depth = GaugeMetricFamily("feedsite_queue_depth", "Messages waiting", labels=["queue"])
        for queue, n in queue_depths().items():
            depth.add_metric([queue], n)
        yield depth


registry = CollectorRegistry()
registry.register(FeedCollector())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics with `Authorization: Bearer <FEEDSITE_METRICS_TOKEN>`. Open without a
    token only with DEBUG on; with DEBUG off and no token configured it answers 403."""
    token = settings.FEEDSITE_METRICS_TOKEN
    if not token and not settings.DEBUG:
        return HttpResponse(
            "set FEEDSITE_METRICS_TOKEN to scrape /metrics\n", status=403, content_type="text/plain"
        )
    if token and not hmac.compare_digest(
        request.headers.get("Authorization", ""), f"Bearer {token}"
    ):
        return HttpResponse("unauthorized\n", status=401, content_type="text/plain")
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
