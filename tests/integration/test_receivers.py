"""Every way an activity or a follow changes reaches the feeds (feeds.receivers): the ORM as a
shell uses it, the Django admin, and cascades from a deleted user; through a real worker."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from activities.models import Activity
from feeds import store
from feeds.models import FanoutJob
from follows.models import Follow
from follows.services import follow_create
from tests.conftest import activate, wait_until
from tests.factories import UserFactory

pytestmark = pytest.mark.worker
STAR = {"verb": "starred", "object_type": "project", "object_id": "p-1"}


def test_an_activity_saved_in_a_shell_is_fanned_out_and_its_delete_taken_back(live_worker):
    author, fan = UserFactory(), UserFactory()
    activate(author, fan)
    follow_create(follower_id=fan.pk, followee_id=author.pk)
    activity = Activity.objects.create(actor=author, **STAR)  # no service, no API
    aid = activity.id
    wait_until(lambda: aid in store.feed_ids(fan.pk))
    job = FanoutJob.objects.get(activity_id=aid, kind=FanoutJob.Kind.PUBLISH)
    assert job.actor_id == author.pk
    activity.delete()  # (sets activity.id to None)
    wait_until(lambda: aid not in store.feed_ids(fan.pk))
    assert store.timeline_ids(author.pk) == []


def test_a_follow_saved_in_a_shell_backfills_and_its_delete_purges(live_worker):
    author, fan = UserFactory(), UserFactory()
    activate(author, fan)
    old = Activity.objects.create(actor=author, **STAR).id
    wait_until(lambda: FanoutJob.objects.filter(activity_id=old, state="done").exists())
    follow = Follow.objects.create(follower=fan, followee=author)
    assert old in store.feed_ids(fan.pk)  # after commit, in this process (autocommit)
    follow.delete()
    assert old not in store.feed_ids(fan.pk)


def test_deleting_a_user_takes_their_activities_out_of_every_feed(live_worker):
    author, fan = UserFactory(), UserFactory()
    activate(author, fan)
    follow_create(follower_id=fan.pk, followee_id=author.pk)
    ids = [Activity.objects.create(actor=author, **STAR).id for _ in range(3)]
    wait_until(lambda: set(ids) <= set(store.feed_ids(fan.pk)))
    author_keys = store.feed_key(author.pk), store.timeline_key(author.pk)
    assert store.client().exists(*author_keys) == 2
    author.delete()  # cascades: activities, follows (and clears author.pk)
    wait_until(lambda: not set(ids) & set(store.feed_ids(fan.pk)))
    assert not store.client().exists(*author_keys)


def test_an_activity_deleted_in_the_admin_leaves_the_feeds(live_worker):
    author, fan = UserFactory(), UserFactory()
    activate(author, fan)
    follow_create(follower_id=fan.pk, followee_id=author.pk)
    aid = Activity.objects.create(actor=author, **STAR).id
    wait_until(lambda: aid in store.feed_ids(fan.pk))
    admin = get_user_model().objects.create_superuser("root", password="pw-for-tests-only")
    browser = Client()
    browser.force_login(admin)
    res = browser.post(f"/admin/activities/activity/{aid}/delete/", {"post": "yes"})
    assert res.status_code == 302, res.content[:500]
    assert not Activity.objects.filter(id=aid).exists()
    wait_until(lambda: aid not in store.feed_ids(fan.pk))
