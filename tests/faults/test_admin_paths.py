"""Follows and users changed in the Django admin, not through the API: the counters, the
threshold mode and every feed stay what the API would have made them (verify_feeds clean)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from activities.models import Activity
from feeds import store
from feeds.models import FanoutJob
from feeds.services import feed_settings_update
from follows.models import Follow, UserStats
from follows.services import follow_create
from tests.conftest import activate, verify_feeds_clean, wait_until
from tests.factories import UserFactory

pytestmark = pytest.mark.worker
STAR = {"verb": "starred", "object_type": "project", "object_id": "p-admin"}


def counts(user) -> tuple[int, int]:
    s = UserStats.objects.get(user=user)
    return s.followers_count, s.following_count


@pytest.fixture
def browser(transactional_db) -> Client:
    admin = get_user_model().objects.create_superuser("root", password="pw-for-tests-only")
    client = Client()
    client.force_login(admin)
    return client


def test_a_follow_added_and_deleted_in_the_admin_keeps_counters_and_feeds(live_worker, browser):
    author, fan = UserFactory(), UserFactory()
    activate(author, fan)
    aid = Activity.objects.create(actor=author, **STAR).id
    wait_until(lambda: FanoutJob.objects.filter(activity_id=aid, state="done").exists())
    res = browser.post("/admin/follows/follow/add/", {"follower": fan.pk, "followee": author.pk})
    assert res.status_code == 302, res.content[:800]
    assert counts(author) == (1, 0) and counts(fan) == (0, 1)
    wait_until(lambda: aid in store.feed_ids(fan.pk))  # backfilled
    follow = Follow.objects.get(follower=fan, followee=author)
    page = browser.get(f"/admin/follows/follow/{follow.pk}/change/")
    assert b'name="followee"' not in page.content  # not editable in place
    res = browser.post(f"/admin/follows/follow/{follow.pk}/delete/", {"post": "yes"})
    assert res.status_code == 302
    assert counts(author) == (0, 0) and counts(fan) == (0, 0)
    wait_until(lambda: aid not in store.feed_ids(fan.pk))  # purged
    verify_feeds_clean()


def test_a_user_deleted_in_the_admin_leaves_every_feed_and_the_counters(live_worker, browser):
    feed_settings_update(celebrity_threshold=4)
    author, fans, followee = UserFactory(), UserFactory.create_batch(3), UserFactory()
    activate(author, followee, *fans)
    follow_create(follower_id=author.pk, followee_id=followee.pk)
    for fan in fans[:2]:
        follow_create(follower_id=fan.pk, followee_id=author.pk)
    ids = [Activity.objects.create(actor=author, **STAR).id for _ in range(3)]
    wait_until(lambda: all(set(ids) <= set(store.feed_ids(f.pk)) for f in fans[:2]))
    # The followee is a pull author (4 followers): losing the deleted one makes it push again.
    for fan in fans:
        follow_create(follower_id=fan.pk, followee_id=followee.pk)
    followee_post = Activity.objects.create(actor=followee, **STAR).id
    assert counts(followee) == (4, 0)
    res = browser.post(f"/admin/auth/user/{author.pk}/delete/", {"post": "yes"})
    assert res.status_code == 302, res.content[:800]
    assert not Activity.objects.filter(actor_id=author.pk).exists()
    assert counts(followee) == (3, 0)
    assert [counts(f) for f in fans] == [(0, 1), (0, 1), (0, 1)]
    wait_until(lambda: not any(set(ids) & set(store.feed_ids(f.pk)) for f in fans))
    assert not store.client().exists(store.feed_key(author.pk), store.timeline_key(author.pk))
    # Back below the threshold through the cascade: its post is pushed to its followers.
    wait_until(lambda: all(followee_post in store.feed_ids(f.pk) for f in fans))
    verify_feeds_clean()


def test_the_job_list_shows_progress_and_filters_by_state(live_worker, browser):
    author, fan = UserFactory(), UserFactory()
    activate(author, fan)
    follow_create(follower_id=fan.pk, followee_id=author.pk)
    aid = Activity.objects.create(actor=author, **STAR).id
    wait_until(lambda: FanoutJob.objects.filter(activity_id=aid, state="done").exists())
    page = browser.get("/admin/feeds/fanoutjob/?state__exact=done").content.decode()
    assert 'class="fanout-progress"' in page and "1 done, 0 failed of 1" in page
    assert "?state__exact=failed" in page  # the state filter
    FanoutJob.objects.filter(activity_id=aid).update(batches_done=0, batches_failed=1)
    page = browser.get("/admin/feeds/fanoutjob/").content.decode()
    assert "1 failed" in page
