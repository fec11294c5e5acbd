"""Recovery: backfill after losing Redis, lazy rebuild, inactive readers, threshold changes."""

from __future__ import annotations

import io
import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

from feeds import store
from feeds.models import FanoutJob
from feeds.services import feed_settings_update
from follows.services import follow_create, follow_delete
from tests.conftest import activate, auth_client, verify_feeds_clean, wait_until
from tests.factories import UserFactory

pytestmark = pytest.mark.worker


def post(user, object_id: str) -> int:
    res = auth_client(user).post(
        "/api/activities/",
        {"verb": "starred", "object_type": "project", "object_id": object_id},
        format="json",
    )
    assert res.status_code == 201, res.content
    aid = int(res.json()["id"])
    wait_until(
        lambda: FanoutJob.objects.filter(activity_id=aid, kind="publish", state="done").exists()
    )
    return aid


def _words() -> tuple[str, str]:
    """The key words of feeds and timelines in the current layout (keys.py)."""
    return store.feed_key(1).split(":")[1], store.timeline_key(1).split(":")[1]


def snapshot() -> dict[str, list]:
    r = store.client()
    keys = sorted(
        k.decode()
        for pattern in _words()
        for k in r.scan_iter(match=f"{store.prefix()}:{pattern}:*", count=1000)
    )
    return {k: r.zrange(k, 0, -1, withscores=True) for k in keys}


def flush_feeds() -> None:
    r = store.client()
    for pattern in (*_words(), "act", "pull"):
        for key in list(r.scan_iter(match=f"{store.prefix()}:{pattern}:*", count=1000)):
            r.delete(key)


@pytest.fixture
def small_world(live_worker):
    """12 readers, 4 authors (one a celebrity), feeds capped at 6 so some are full."""
    feed_settings_update(celebrity_threshold=8, feed_max_length=6, fanout_batch_size=4)
    readers = [UserFactory() for _ in range(12)]
    authors = [UserFactory() for _ in range(4)]
    activate(*readers, *authors)
    for i, reader in enumerate(readers):
        for author in authors[: 1 + i % 4]:
            follow_create(follower_id=reader.pk, followee_id=author.pk)
    for n in range(3):
        for author in authors:
            post(author, f"{author.pk}-{n}")
    assert FanoutJob.objects.filter(
        actor_id=authors[0].pk, strategy="pull"
    ).exists()  # 12 followers
    return readers, authors


def test_flush_then_backfill_restores_identical_feeds_and_is_idempotent(small_world):
    before = snapshot()
    assert len(before) == 16 + 4 and any(len(v) == 6 for v in before.values())  # feeds + timelines
    flush_feeds()
    out = io.StringIO()
    call_command("backfill", "--batch-size", "5", stdout=out)
    assert "users=16" in out.getvalue() and "seconds=" in out.getvalue()
    assert "backfill: 5/16 users" in out.getvalue()  # plain progress lines off a terminal
    assert snapshot() == before
    call_command("backfill", stdout=io.StringIO())
    assert snapshot() == before  # a second run changes nothing


def test_backfill_options(small_world):
    readers, _ = small_world
    flush_feeds()
    out = io.StringIO()
    call_command("backfill", "--dry-run", stdout=out)
    assert "dry-run" in out.getvalue() and snapshot() == {}
    call_command("backfill", "--user", str(readers[0].pk), stdout=io.StringIO())
    assert set(snapshot()) == {store.feed_key(readers[0].pk)}  # a reader: no timeline
    call_command(
        "backfill", "--since", "2999-01-01", "--user", str(readers[1].pk), stdout=io.StringIO()
    )
    assert store.feed_ids(readers[1].pk) == []  # nothing that recent
    with pytest.raises(CommandError, match="unknown user ids"):
        call_command("backfill", "--user", "999999")
    with pytest.raises(CommandError, match="--since"):
        call_command("backfill", "--since", "yesterday")


def test_backfill_through_celery(small_world):
    before = snapshot()
    flush_feeds()
    out = io.StringIO()
    call_command("backfill", "--celery", "--batch-size", "4", stdout=out)
    assert "users=16" in out.getvalue()
    assert snapshot() == before


def test_missing_feed_is_rebuilt_once_on_first_read_and_complete(small_world):
    readers, _ = small_world
    reader = readers[-1]
    client = auth_client(reader)
    first = client.get("/api/feed/").json()
    assert first["items"]
    store.client().delete(store.feed_key(reader.pk))
    rebuilds = store.read_stat("rebuilds")
    results = []

    def read() -> None:
        from django.db import connection

        try:
            results.append(auth_client(reader).get("/api/feed/").json())
        finally:
            connection.close()  # back to the pool (the test client keeps it open otherwise)

    threads = [threading.Thread(target=read) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.read_stat("rebuilds") == rebuilds + 1
    assert all(r == first for r in results) and len(results) == 20


def test_reader_with_nothing_is_not_rebuilt_on_every_read(live_worker):
    loner = UserFactory()
    client = auth_client(loner)
    rebuilds = store.read_stat("rebuilds")
    for _ in range(3):
        assert client.get("/api/feed/").json() == {"items": [], "next_cursor": None}
    assert store.read_stat("rebuilds") == rebuilds + 1


def test_inactive_reader_is_skipped_at_fanout_then_rebuilt_like_an_active_twin(live_worker):
    feed_settings_update(inactive_after_days=30)
    author, active, inactive = UserFactory(), UserFactory(), UserFactory()
    for reader in (active, inactive):
        follow_create(follower_id=reader.pk, followee_id=author.pk)
        auth_client(reader).get("/api/feed/")
    ttl = store.client().ttl(store.feed_key(active.pk))
    assert 29 * 86_400 < ttl <= 30 * 86_400  # each read keeps the feed 30 more days
    store.client().delete(store.feed_key(inactive.pk))  # what 30 days without a read do
    ids = [post(author, f"p{i}") for i in range(3)]
    job = FanoutJob.objects.get(activity_id=ids[-1])
    assert job.skipped == 1 and job.recipients == 2
    assert not store.client().exists(store.feed_key(inactive.pk))  # 0 writes to it
    twin = auth_client(active).get("/api/feed/").json()
    assert auth_client(inactive).get("/api/feed/").json() == twin
    assert len(twin["items"]) == 3


def test_author_crossing_the_threshold_both_ways_loses_and_duplicates_nothing(live_worker):
    feed_settings_update(celebrity_threshold=3, aggregation_window_seconds=1)
    author = UserFactory()
    fans = [UserFactory() for _ in range(3)]
    activate(*fans)
    follow_create(follower_id=fans[0].pk, followee_id=author.pk)
    pushed = post(author, "pushed")  # 1 follower: push
    for fan in fans[1:]:
        follow_create(follower_id=fan.pk, followee_id=author.pk)
    pulled = post(author, "pulled")  # 3 followers: pull
    assert FanoutJob.objects.get(activity_id=pulled).strategy == "pull"

    def feed(user) -> list[int]:
        items = auth_client(user).get("/api/feed/").json()["items"]
        return [int(i) for item in items for i in item["activity_ids"]]

    # fans[1] got the pushed one from the follow backfill.
    assert feed(fans[0]) == [pulled, pushed] == feed(fans[1])
    follow_delete(follower_id=fans[2].pk, followee_id=author.pk)  # 2 followers: push again
    wait_until(lambda: FanoutJob.objects.get(activity_id=pulled).strategy == "push")
    wait_until(lambda: FanoutJob.objects.get(activity_id=pulled).state == "done")
    assert pulled in store.feed_ids(fans[1].pk)  # now in the feed itself, not pulled
    assert feed(fans[0]) == [pulled, pushed] == feed(fans[1])
    assert feed(fans[2]) == []


def test_two_unfollows_that_commit_together_across_the_threshold_repush(live_worker):
    # Threshold 3 and exactly three followers (pull). Two unfollows commit before either one's
    # after-commit step reads the count: both read 1, neither saw 2 (3 -> 1): the crossing must
    # still be seen, once.
    feed_settings_update(celebrity_threshold=3, aggregation_window_seconds=1)
    author = UserFactory()
    fans = [UserFactory() for _ in range(3)]
    activate(*fans)
    for fan in fans:
        follow_create(follower_id=fan.pk, followee_id=author.pk)
    pulled = post(author, "pulled")
    assert FanoutJob.objects.get(activity_id=pulled).strategy == "pull"
    with transaction.atomic():
        follow_delete(follower_id=fans[1].pk, followee_id=author.pk)
        follow_delete(follower_id=fans[2].pk, followee_id=author.pk)
    wait_until(lambda: FanoutJob.objects.get(activity_id=pulled).strategy == "push")
    wait_until(lambda: pulled in store.feed_ids(fans[0].pk))
    assert pulled not in store.feed_ids(fans[1].pk)
    verify_feeds_clean()


def test_raising_the_threshold_pushes_recent_activities_of_authors_now_below_it(live_worker):
    feed_settings_update(celebrity_threshold=2)
    author, fans = UserFactory(), [UserFactory() for _ in range(2)]
    activate(*fans)
    for fan in fans:
        follow_create(follower_id=fan.pk, followee_id=author.pk)
    pulled = post(author, "x")
    assert FanoutJob.objects.get(activity_id=pulled).strategy == "pull"
    feed_settings_update(celebrity_threshold=5)
    wait_until(lambda: all(pulled in store.feed_ids(f.pk) for f in fans))
    for fan in fans:
        items = auth_client(fan).get("/api/feed/").json()["items"]
        assert [i["id"] for i in items] == [str(pulled)]


@pytest.mark.parametrize("celebrities", [1, 9], ids=["script-read", "pipelined-read"])
def test_a_lost_celebrity_timeline_is_rebuilt_by_the_next_read(live_worker, celebrities):
    feed_settings_update(celebrity_threshold=1, aggregation_window_seconds=1)  # all pull
    reader = UserFactory()
    stars = [UserFactory() for _ in range(celebrities)]
    activate(reader, *stars)
    for star in stars:
        follow_create(follower_id=reader.pk, followee_id=star.pk)
    posts = [post(star, f"by-{star.pk}") for star in stars]
    wait_until(
        lambda: FanoutJob.objects.filter(activity_id__in=posts, state="done").count() == len(posts)
    )

    def feed() -> set[int]:
        items = auth_client(reader).get("/api/feed/").json()["items"]
        return {int(i) for item in items for i in item["activity_ids"]}

    assert feed() == set(posts)
    store.client().delete(*(store.timeline_key(s.pk) for s in stars))  # evicted, flushed
    assert feed() == set(posts)
    assert store.timeline_ids(stars[0].pk) == [posts[0]]


def test_verify_feeds_finds_missing_and_extra_entries_and_repairs_them(small_world):
    readers, authors = small_world
    out = io.StringIO()
    call_command("verify_feeds", stdout=out)
    assert "wrong=0 missing=0 extra=0" in out.getvalue(), out.getvalue()

    required = store.feed_ids(readers[3].pk)[0]  # follows all four authors
    store.client().zrem(store.feed_key(readers[3].pk), store.encode_id(required))
    stranger = UserFactory()
    foreign = post(stranger, "not-followed")
    store.client().zadd(store.feed_key(readers[0].pk), {store.encode_id(foreign): 0})
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("verify_feeds", stdout=out)
    assert exit_info.value.code == 1
    text = out.getvalue()
    assert f"user={readers[3].pk} feed=home missing=1 extra=0" in text
    assert f"user={readers[0].pk} feed=home missing=0 extra=1" in text
    assert "wrong=2 missing=1 extra=1" in text

    call_command("verify_feeds", "--repair", stdout=io.StringIO())
    out = io.StringIO()
    call_command("verify_feeds", stdout=out)
    assert "wrong=0" in out.getvalue()
    assert required in store.feed_ids(readers[3].pk)
    assert foreign not in store.feed_ids(readers[0].pk)


def test_an_activity_fanned_out_while_a_feed_is_rebuilt_is_not_lost(live_worker, monkeypatch):
    from feeds import consistency, rebuild

    author, reader = UserFactory(), UserFactory()
    activate(author)
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    old = post(author, "before")
    assert not store.client().exists(store.feed_key(reader.pk))  # never read: no feed
    read_db = consistency.feed_entries_to_build
    during: list[int] = []

    def read_then_publish(**kwargs):
        entries = read_db(**kwargs)  # the rebuild has read PostgreSQL, not yet written Redis
        during.append(post(author, "during"))  # fanned out by the worker now
        return entries

    monkeypatch.setattr(consistency, "feed_entries_to_build", read_then_publish)
    assert rebuild.feed_ensure(user_id=reader.pk, conf=rebuild.get_conf())
    assert set(store.feed_ids(reader.pk)) == {old, during[0]}
    assert not store.client().exists(store.parked_key(reader.pk))
    verify_feeds_clean()


def test_a_delete_reaches_a_feed_rebuilt_while_its_pull_author_dipped_under_the_threshold(
    live_worker,
):
    """Found by the soak: an activity published by a pull author, put into a reader's feed by a
    rebuild that read the author's counter during a dip under the threshold (no recorded mode
    change), stayed in that feed after its delete (the remove job skipped pull authors)."""
    from feeds import rebuild
    from follows.models import UserStats

    feed_settings_update(celebrity_threshold=2)
    author, reader, other = UserFactory(), UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    follow_create(follower_id=other.pk, followee_id=author.pk)
    aid = post(author, "pulled")
    assert FanoutJob.objects.get(activity_id=aid, kind="publish").strategy == "pull"
    stats = UserStats.objects.filter(user=author)
    stats.update(followers_count=1)  # the dip, as a rebuild reads it
    rebuild.users_rebuild(user_ids=[reader.pk])
    stats.update(followers_count=2)
    assert aid in store.feed_ids(reader.pk)
    assert auth_client(author).delete(f"/api/activities/{aid}/").status_code == 204
    wait_until(lambda: FanoutJob.objects.filter(activity_id=aid, kind="remove", state="done"))
    assert aid not in store.feed_ids(reader.pk)
    verify_feeds_clean()
