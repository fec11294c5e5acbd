import pytest
from rest_framework.test import APIClient

from tests.conftest import auth_client, wait_until
from tests.factories import UserFactory

pytestmark = pytest.mark.worker


def test_metrics_expose_jobs_deliveries_latency_and_queues(live_worker, settings):
    from feeds.models import FanoutJob
    from follows.services import follow_create
    from tests.conftest import activate

    author, fan = UserFactory(), UserFactory()
    activate(author, fan)
    follow_create(follower_id=fan.pk, followee_id=author.pk)
    res = auth_client(author).post(
        "/api/activities/", {"verb": "starred", "object_type": "p", "object_id": "1"}, format="json"
    )
    # The post's publish job and the follow's notify job (the followee's notification).
    wait_until(lambda: FanoutJob.objects.exclude(state="done").count() == 0)
    assert FanoutJob.objects.filter(activity_id=int(res.json()["id"]), state="done").exists()
    jobs = FanoutJob.objects.count()
    assert jobs == 2
    auth_client(fan).get("/api/feed/")
    settings.FEEDSITE_METRICS_TOKEN = "scrape-token"
    assert APIClient().get("/metrics").status_code == 401
    body = APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token").content.decode()
    assert f'feedsite_fanout_jobs{{state="done"}} {jobs}.0' in body
    assert "feedsite_deliveries_total 1.0" in body  # home-feed deliveries
    assert f"feedsite_fanout_batch_seconds_count {jobs}.0" in body  # one batch each
    read_count = next(
        float(line.split()[-1])
        for line in body.splitlines()
        if line.startswith("feedsite_feed_read_seconds_count")
    )
    assert read_count >= 1  # reads are flushed in batches; this process's are flushed by the scrape
    assert 'feedsite_queue_depth{queue="fanout"}' in body
    assert "feedsite_dead_letters_open 0.0" in body


@pytest.mark.django_db
def test_the_grafana_dashboard_queries_only_metrics_that_are_exported(settings):
    """config/grafana/dashboards/feedsite.json is valid JSON, and every metric its panels query
    is in what /metrics serves (a renamed metric would leave a panel empty)."""
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads((root / "config/grafana/dashboards/feedsite.json").read_text())
    settings.FEEDSITE_METRICS_TOKEN = "t"
    exported = APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()
    names = set(re.findall(r"^(feedsite_[a-z_]+)", exported, re.M))
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"feedsite_[a-z_]+", target["expr"])
    }
    assert queried, "the dashboard queries nothing"
    assert queried <= names, queried - names
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("jobs", "deliveries", "batch", "read", "queue", "dead letters"):
        assert topic in titles
