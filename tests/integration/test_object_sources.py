"""Objects as feed sources (issue 27, points 5-7 and 9): home feeds hold what is about the
objects a reader follows, once whatever the number of sources; unfollows keep what another
source brings; objects cross the celebrity threshold both ways without losing anything; one
fan-out job per activity covers author, object and target followers; rebuilds, backfill and
verify_feeds know object sources. Real PostgreSQL and Redis, fan-out by a real Celery worker."""

from __future__ import annotations

import io
import itertools
import threading

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import F
from django.utils import timezone

from activities.ids import make_id
from activities.models import Activity
from feeds import fanout, rebuild, store
from feeds.models import FanoutBatch, FanoutDeadLetter, FanoutJob
from feeds.services import feed_settings_update
from feeds.store import objects as object_store
from feeds.store.keys import object_timeline_key
from feeds.tasks import fanout_start_task
from follows.models import ObjectStats
from follows.services import (
    block_create,
    follow_create,
    follow_delete,
    mute_create,
    object_follow_create,
    object_follow_delete,
)
from tests.conftest import activate, auth_client, verify_feeds_clean, wait_until
from tests.factories import UserFactory

pytestmark = pytest.mark.worker
REPO = ("repo", "octo/hello-world")
ISSUE = ("issue", "octo/hello-world#7")
TOPIC = ("topic", "rust")


VERBS = itertools.count()


def publish(user, obj=REPO, target=None, verb=None, **extra) -> int:
    """An activity about ``obj`` (in ``target``) through the API, its fan-out finished; a verb
    of its own unless given (no two group into one feed item)."""
    verb = verb or f"v{next(VERBS)}"
    body = {"verb": verb, "object_type": obj[0], "object_id": obj[1], **extra}
    if target is not None:
        body |= {"target_type": target[0], "target_id": target[1]}
    res = auth_client(user).post("/api/activities/", body, format="json")
    assert res.status_code == 201, res.content
    aid = int(res.json()["id"])
    wait_done(aid)
    return aid


def wait_done(aid: int, kind: str = "publish") -> FanoutJob:
    return wait_until(
        lambda: FanoutJob.objects.filter(activity_id=aid, kind=kind, state="done").first(),
        timeout=30,
    )


def jobs_quiet() -> None:
    wait_until(
        lambda: not FanoutJob.objects.filter(state__in=("pending", "running")).exists(),
        timeout=30,
    )


def follow_obj(user, obj=REPO) -> None:
    object_follow_create(user_id=user.pk, object_type=obj[0], object_id=obj[1])


def unfollow_obj(user, obj=REPO) -> None:
    object_follow_delete(user_id=user.pk, object_type=obj[0], object_id=obj[1])


def read_ids(user, limit: int = 7) -> list[int]:
    """Every activity id of the user's feed through the API, page after page, in order; each
    id at most once (asserted)."""
    client, ids, cursor = auth_client(user), [], None
    for _ in range(200):
        res = client.get("/api/feed/", {"limit": limit, **({"cursor": cursor} if cursor else {})})
        assert res.status_code == 200, res.content
        body = res.json()
        assert not body.get("partial")
        ids += [int(a) for item in body["items"] for a in item["activity_ids"]]
        cursor = body["next_cursor"]
        if cursor is None:
            assert len(ids) == len(set(ids)), ids
            return ids
    raise AssertionError("paging did not end")


@pytest.fixture
def small(live_worker):
    """Small limits, so batches, caps and thresholds are crossed on a handful of users."""
    feed_settings_update(
        celebrity_threshold=100,
        fanout_batch_size=2,
        feed_max_length=50,
        aggregation_window_seconds=1,
    )


def test_author_object_and_target_followers_are_one_job_each_recipient_written_once(small):
    author, reader = UserFactory(), UserFactory()
    a_fans = [UserFactory() for _ in range(2)]  # follow the author
    o_fans = [UserFactory() for _ in range(2)]  # follow the repo
    t_fans = [UserFactory() for _ in range(2)]  # follow the issue
    everyone = [reader, *a_fans, *o_fans, *t_fans]
    activate(author, *everyone)
    for fan in (reader, *a_fans):
        follow_create(follower_id=fan.pk, followee_id=author.pk)
    for fan in (reader, a_fans[0], *o_fans):
        follow_obj(fan, REPO)
    for fan in (reader, o_fans[0], *t_fans):
        follow_obj(fan, ISSUE)
    follow_obj(author, ISSUE)  # the actor follows the target: not a recipient of their own
    outsider = UserFactory()
    activate(outsider)
    aid = publish(author, REPO, target=ISSUE)
    job = FanoutJob.objects.get(activity_id=aid, kind="publish")
    assert job.strategy == "push"
    assert job.recipients == len(everyone) == 7  # distinct users, not 3 + 4 + 4
    # 2 a batch over the 8 users of the union (the actor among them, skipped when written).
    assert job.batches_total == 5 and job.batches_done == 5
    delivered = sum(FanoutBatch.objects.filter(job=job).values_list("delivered", flat=True))
    assert delivered == 7  # each recipient written (and counted) once
    for user in (*everyone, author):
        assert store.feed_ids(user.pk) == [aid]
        assert read_ids(user) == [aid]
    assert store.feed_ids(outsider.pk) == [] and read_ids(outsider) == []
    assert object_store.object_timeline_ids(REPO) == [aid]
    assert object_store.object_timeline_ids(ISSUE) == [aid]
    # Someone nobody follows posting about the repo reaches its followers (and not the author's).
    stranger = UserFactory()
    other = publish(stranger, REPO)
    for user in (reader, a_fans[0], *o_fans):
        assert store.feed_ids(user.pk) == [other, aid]
    assert store.feed_ids(a_fans[1].pk) == [aid] and store.feed_ids(t_fans[0].pk) == [aid]
    verify_feeds_clean()


def test_a_follow_copies_recent_activities_and_the_rest_pages_from_postgresql(small):
    feed_settings_update(follow_backfill_count=3, feed_max_length=5)
    author, other, reader = UserFactory(), UserFactory(), UserFactory()
    activate(reader)
    about = [publish(author if i % 2 else other, REPO) for i in range(8)]
    about.append(publish(other, TOPIC, target=REPO))  # as the target too
    elsewhere = publish(author, TOPIC)
    follow_obj(reader, REPO)
    newest = sorted(about, reverse=True)
    assert store.feed_ids(reader.pk) == newest[:3]
    # Published after the follow began: delivered; the whole history pages on in PostgreSQL.
    later = publish(other, REPO)
    assert store.feed_ids(reader.pk)[0] == later
    assert read_ids(reader, limit=2) == [later, *newest]
    assert elsewhere not in read_ids(reader)
    verify_feeds_clean()


def test_unfollowing_an_object_keeps_what_another_source_brings(small):
    reader, friend, stranger = UserFactory(), UserFactory(), UserFactory()
    activate(reader, friend, stranger)
    follow_obj(reader, REPO)
    follow_obj(reader, ISSUE)
    follow_create(follower_id=reader.pk, followee_id=friend.pk)
    only_repo = publish(stranger, REPO)
    repo_in_issue = publish(stranger, REPO, target=ISSUE)
    by_friend = publish(friend, REPO)
    own = publish(reader, REPO)
    assert set(read_ids(reader)) == {only_repo, repo_in_issue, by_friend, own}
    unfollow_obj(reader, REPO)
    assert set(store.feed_ids(reader.pk)) == {repo_in_issue, by_friend, own}
    assert set(read_ids(reader)) == {repo_in_issue, by_friend, own}
    verify_feeds_clean()
    # And unfollowing the author keeps what a followed object brings.
    follow_obj(reader, REPO)
    follow_delete(follower_id=reader.pk, followee_id=friend.pk)
    assert by_friend in store.feed_ids(reader.pk)
    other_by_friend = publish(friend, TOPIC)  # about nothing the reader follows
    assert other_by_friend not in read_ids(reader)
    assert by_friend in read_ids(reader)
    verify_feeds_clean()


def test_an_object_crossing_the_threshold_both_ways_loses_and_duplicates_nothing(small):
    feed_settings_update(celebrity_threshold=3)
    author = UserFactory()
    fans = [UserFactory() for _ in range(3)]
    activate(author, *fans)
    follow_obj(fans[0])
    pushed = publish(author, REPO)  # 1 follower: push
    assert pushed in store.feed_ids(fans[0].pk)
    follow_obj(fans[1])  # backfill brings `pushed`
    follow_obj(fans[2])  # 3 followers: pull
    assert ObjectStats.objects.get(object_type=REPO[0], object_id=REPO[1]).followers_count == 3
    pulled = publish(author, ISSUE, target=REPO)
    job = FanoutJob.objects.get(activity_id=pulled, kind="publish")
    assert job.strategy == "pull" and job.recipients == 3
    for fan in fans:
        assert pulled not in store.feed_ids(fan.pk)  # read from the repo's timeline
    assert object_store.object_timeline_ids(REPO) == [pulled, pushed]
    assert read_ids(fans[0]) == [pulled, pushed] == read_ids(fans[1])
    # Followed after `pushed`: no backfill for a pull object, but its timeline shows whole.
    assert read_ids(fans[2]) == [pulled, pushed]
    assert (
        auth_client(fans[0])
        .get("/api/objects/", {"type": REPO[0], "id": REPO[1]})
        .json()["is_celebrity"]
    )
    unfollow_obj(fans[2])  # 2 followers: push again, the pulled activity pushed now
    wait_until(lambda: FanoutJob.objects.get(activity_id=pulled, kind="publish").strategy == "push")
    wait_done(pulled)
    for fan in fans[:2]:
        assert pulled in store.feed_ids(fan.pk)
        assert read_ids(fan) == [pulled, pushed]
    assert read_ids(fans[2]) == []
    verify_feeds_clean()
    # Up again: what the feeds hold stays, the timeline adds nothing twice.
    follow_obj(fans[2])
    assert read_ids(fans[0]) == [pulled, pushed]
    verify_feeds_clean()


def test_an_author_going_push_gets_a_job_that_pushed_only_to_object_followers(small):
    """A pull author's activity about a push object: one job, the object's followers pushed,
    the author's followers left to the timeline; once the author drops under the threshold,
    that job runs again and the author's followers get it in their feeds."""
    feed_settings_update(celebrity_threshold=3)
    star = UserFactory()
    fans = [UserFactory() for _ in range(3)]
    watcher = UserFactory()
    activate(star, watcher, *fans)
    for fan in fans:
        follow_create(follower_id=fan.pk, followee_id=star.pk)
    follow_obj(watcher)
    aid = publish(star, REPO)
    job = FanoutJob.objects.get(activity_id=aid, kind="publish")
    assert job.strategy == "push" and job.recipients == 4 and job.boundaries["author"] is False
    assert store.feed_ids(watcher.pk) == [aid] and aid not in store.feed_ids(fans[0].pk)
    assert read_ids(fans[0]) == [aid]  # pulled from the star's timeline
    follow_delete(follower_id=fans[2].pk, followee_id=star.pk)  # 2 followers: push
    wait_until(lambda: aid in store.feed_ids(fans[0].pk))
    wait_done(aid)
    assert read_ids(fans[0]) == [aid] == read_ids(watcher)
    verify_feeds_clean()


def test_a_job_that_pulled_a_source_replans_when_the_source_went_push_meanwhile(small):
    feed_settings_update(celebrity_threshold=2)
    author, fans = UserFactory(), [UserFactory() for _ in range(2)]
    activate(author, *fans)
    for fan in fans:
        follow_obj(fan)
    aid = publish(author, REPO)
    job = FanoutJob.objects.get(activity_id=aid, kind="publish")
    assert job.strategy == "pull" and job.boundaries["pull"] == [list(REPO)]
    assert not fanout.job_replan_if_stale(job_id=job.id)  # nothing moved
    # The object went push after this job was planned (as a repush that found it still
    # running would leave it): the job, done, goes back to pending, once.
    ObjectStats.objects.filter(object_type=REPO[0], object_id=REPO[1]).update(
        followers_count=F("followers_count") - 1
    )
    object_store.mark_objects_went_push([REPO], make_id(timezone.now()))
    assert fanout.job_replan_if_stale(job_id=job.id)
    assert not fanout.job_replan_if_stale(job_id=job.id)
    fanout_start_task.delay(job.id)
    wait_until(lambda: FanoutJob.objects.get(id=job.id).strategy == "push")
    wait_done(aid)
    for fan in fans:
        assert aid in store.feed_ids(fan.pk)


def test_concurrent_follows_and_unfollows_of_one_object(small):
    feed_settings_update(celebrity_threshold=6)
    author = UserFactory()
    users = [UserFactory() for _ in range(12)]
    activate(author, *users)
    before = publish(author, REPO)
    errors: list[BaseException] = []

    def churn(user, n: int) -> None:
        try:
            for i in range(4):
                (follow_obj if (i + n) % 2 == 0 else unfollow_obj)(user)
            follow_obj(user) if n % 3 else unfollow_obj(user)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=churn, args=(u, n)) for n, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    followers = {u.pk for n, u in enumerate(users) if n % 3}
    stats = ObjectStats.objects.get(object_type=REPO[0], object_id=REPO[1])
    assert stats.followers_count == len(followers) == 8  # at or above the threshold: pull
    jobs_quiet()
    after = publish(author, REPO)
    for n, user in enumerate(users):
        assert after not in store.feed_ids(user.pk)  # a pull object: nobody written
        seen = read_ids(user)
        assert (after in seen) == (user.pk in followers), (n, seen)
        assert before not in seen or user.pk in followers
    verify_feeds_clean()


def test_blocked_and_muted_authors_never_show_whatever_the_source(small):
    feed_settings_update(feed_max_length=4)
    reader, blocked, blocker, muted, friend = (UserFactory() for _ in range(5))
    activate(reader, blocked, blocker, muted, friend)
    follow_obj(reader, REPO)
    follow_obj(reader, ISSUE)
    follow_create(follower_id=reader.pk, followee_id=friend.pk)
    block_create(blocker_id=reader.pk, blocked_id=blocked.pk)
    block_create(blocker_id=blocker.pk, blocked_id=reader.pk)
    mute_create(muter_id=reader.pk, muted_id=muted.pk)
    shown = []
    for _ in range(3):  # more than the cap: the deep pages come from PostgreSQL
        publish(blocked, REPO, target=ISSUE)
        publish(blocker, ISSUE)
        publish(muted, REPO)
        shown.append(publish(friend, REPO))
    assert read_ids(reader, limit=2) == sorted(shown, reverse=True)
    store.client().delete(store.feed_key(reader.pk))  # rebuilt on the next read
    assert read_ids(reader, limit=3) == sorted(shown, reverse=True)
    # A pull object's timeline hides them too.
    feed_settings_update(celebrity_threshold=1)
    assert read_ids(reader, limit=2) == sorted(shown, reverse=True)


def test_deletes_and_edits_reach_object_followers(small):
    author, fan, pull_fan = UserFactory(), UserFactory(), UserFactory()
    activate(author, fan, pull_fan)
    follow_obj(fan, REPO)
    follow_obj(pull_fan, TOPIC)
    aid = publish(author, REPO, target=TOPIC, object_title="before")
    assert aid in store.feed_ids(fan.pk)
    res = auth_client(author).patch(
        f"/api/activities/{aid}/", {"object_title": "after"}, format="json"
    )
    assert res.status_code == 200, res.content
    for user in (fan, pull_fan):
        items = auth_client(user).get("/api/feed/").json()["items"]
        assert [i["object_title"] for i in items] == ["after"]
    assert auth_client(author).delete(f"/api/activities/{aid}/").status_code == 204
    remove = wait_done(aid, "remove")
    assert remove.recipients == 2 and remove.boundaries["objects"] == [list(REPO), list(TOPIC)]
    assert aid not in store.feed_ids(fan.pk)
    assert object_store.object_timeline_ids(REPO) == object_store.object_timeline_ids(TOPIC) == []
    assert read_ids(fan) == read_ids(pull_fan) == []
    verify_feeds_clean()


def test_a_delete_of_a_pulled_activity_reaches_a_feed_rebuilt_while_the_object_pushed(small):
    feed_settings_update(celebrity_threshold=2)
    author, reader, other = UserFactory(), UserFactory(), UserFactory()
    follow_obj(reader)
    follow_obj(other)
    aid = publish(author, REPO)
    assert FanoutJob.objects.get(activity_id=aid, kind="publish").strategy == "pull"
    stats = ObjectStats.objects.filter(object_type=REPO[0], object_id=REPO[1])
    stats.update(followers_count=1)  # a dip, as a rebuild reads it
    rebuild.users_rebuild(user_ids=[reader.pk])
    stats.update(followers_count=2)
    assert aid in store.feed_ids(reader.pk)
    assert auth_client(author).delete(f"/api/activities/{aid}/").status_code == 204
    wait_done(aid, "remove")
    assert aid not in store.feed_ids(reader.pk)


def _snapshot() -> dict[str, list]:
    r = store.client()
    keys = sorted(
        k.decode()
        for word in ("home", "line", "oline")
        for k in r.scan_iter(match=f"{store.prefix()}:{word}:*", count=1000)
    )
    return {k: r.zrange(k, 0, -1) for k in keys}


def test_lost_feeds_and_object_timelines_are_rebuilt_and_verify_feeds_repairs(small):
    feed_settings_update(celebrity_threshold=3, feed_max_length=6)
    authors = [UserFactory() for _ in range(2)]
    readers = [UserFactory() for _ in range(4)]
    activate(*authors, *readers)
    for n, reader in enumerate(readers):
        follow_obj(reader, REPO)  # 4 followers: a pull object
        if n % 2:
            follow_obj(reader, ISSUE)  # 2 followers: a push object
        if n == 3:
            follow_create(follower_id=reader.pk, followee_id=authors[0].pk)
    posted = []
    for i in range(4):
        for author in authors:
            posted.append(publish(author, REPO if i % 2 else TOPIC, target=ISSUE))
    expected = {r.pk: read_ids(r) for r in readers}
    before = _snapshot()
    assert any(k.split(":")[1] == "oline" for k in before)
    # A lost feed and a lost pull object's timeline: the next read rebuilds both.
    store.client().delete(store.feed_key(readers[1].pk), object_timeline_key(*REPO))
    assert read_ids(readers[1]) == expected[readers[1].pk]
    assert _snapshot() == before
    # Everything lost: backfill restores every feed and timeline, and a second run changes
    # nothing.
    r = store.client()
    for word in ("home", "line", "oline", "act", "pull"):
        for key in list(r.scan_iter(match=f"{store.prefix()}:{word}:*", count=1000)):
            r.delete(key)
    call_command("backfill", stdout=io.StringIO())
    assert _snapshot() == before
    call_command("backfill", stdout=io.StringIO())
    assert _snapshot() == before
    for reader in readers:
        assert read_ids(reader) == expected[reader.pk]
    # verify_feeds finds a lost entry of an object source and a ghost in an object timeline.
    wanted = store.feed_ids(readers[1].pk)[0]
    r.zrem(store.feed_key(readers[1].pk), store.encode_id(wanted))
    ghost = publish(authors[1], TOPIC)  # about neither object
    r.zadd(object_timeline_key(*REPO), {store.encode_id(ghost): 0})
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("verify_feeds", stdout=out)
    text = out.getvalue()
    assert f"user={readers[1].pk} feed=home missing=1 extra=0" in text, text
    assert "object=repo:octo/hello-world feed=object-timeline missing=0 extra=1" in text, text
    call_command("verify_feeds", "--repair", stdout=io.StringIO())
    verify_feeds_clean()
    assert wanted in store.feed_ids(readers[1].pk)
    assert ghost not in object_store.object_timeline_ids(REPO)
    assert Activity.objects.filter(id__in=posted).count() == len(posted)


def test_raising_the_threshold_pushes_recent_activities_of_objects_now_below_it(small):
    feed_settings_update(celebrity_threshold=2)
    author, fans = UserFactory(), [UserFactory() for _ in range(2)]
    activate(*fans)
    for fan in fans:
        follow_obj(fan, TOPIC)
    pulled = publish(author, REPO, target=TOPIC)
    assert FanoutJob.objects.get(activity_id=pulled, kind="publish").strategy == "pull"
    assert all(pulled not in store.feed_ids(f.pk) for f in fans)
    feed_settings_update(celebrity_threshold=5)
    wait_until(lambda: all(pulled in store.feed_ids(f.pk) for f in fans))
    for fan in fans:
        assert read_ids(fan) == [pulled]
    verify_feeds_clean()


def test_a_failed_batch_of_a_two_source_job_is_dead_lettered_and_replayed(small):
    author = UserFactory()
    fans = [UserFactory() for _ in range(3)]
    watchers = [UserFactory() for _ in range(3)]
    activate(author, *fans, *watchers)
    for fan in fans:
        follow_create(follower_id=fan.pk, followee_id=author.pk)
    for watcher in (*watchers, fans[0]):
        follow_obj(watcher)
    # A real store fault: one object follower's feed key holds the wrong type (WRONGTYPE).
    store.client().set(store.feed_key(watchers[1].pk), "not a sorted set")
    res = auth_client(author).post(
        "/api/activities/",
        {"verb": "pushed", "object_type": REPO[0], "object_id": REPO[1]},
        format="json",
    )
    aid = int(res.json()["id"])
    job = wait_until(
        lambda: FanoutJob.objects.filter(activity_id=aid, kind="publish", state="failed").first(),
        timeout=30,
    )
    assert job.recipients == 6 and job.batches_failed == 1
    letter = FanoutDeadLetter.objects.get(job=job)
    assert "WRONGTYPE" in letter.error
    store.client().delete(store.feed_key(watchers[1].pk))
    store.write_feed(watchers[1].pk, [], 50, 0)
    call_command("replay_dead_letters", stdout=io.StringIO())
    job.refresh_from_db()
    assert (job.state, job.batches_failed) == ("done", 0)
    delivered = sum(FanoutBatch.objects.filter(job=job).values_list("delivered", flat=True))
    assert delivered == 6
    for user in (*fans, *watchers):
        assert store.feed_ids(user.pk) == [aid]
    verify_feeds_clean()
