"""The whole history: home-feed pages past what Redis holds come from PostgreSQL (issue 25 point
1), through a real Celery worker, on real PostgreSQL (or SQLite) and Redis."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from activities.models import Activity
from feeds import store
from feeds.services import feed_settings_update
from follows.services import block_create, follow_create, mute_create
from tests.conftest import activate, auth_client
from tests.factories import UserFactory
from tests.integration.test_fanout import publish, wait_job

pytestmark = pytest.mark.worker
CAP = 10


def page_through(client, limit: int) -> tuple[list[list[int]], int]:
    """Every page of the reader's feed: the activity ids of each item, and how many pages."""
    items, cursor, pages = [], None, 0
    while True:
        res = client.get("/api/feed/", {"limit": limit, **({"cursor": cursor} if cursor else {})})
        assert res.status_code == 200, res.content
        body = res.json()
        assert not body.get("partial")
        pages += 1
        items += [[int(a) for a in item["activity_ids"]] for item in body["items"]]
        cursor = body["next_cursor"]
        assert len(body["items"]) <= limit
        if cursor is None:
            return items, pages
        assert body["items"], "a page with a next cursor is never empty"
        assert pages < 200


@pytest.fixture
def three_sources(live_worker):
    """A reader following a push author and a pull author (3 followers, threshold 3), with the
    reader's own posts interleaved: 3x the cap of each, every fan-out finished."""
    feed_settings_update(
        feed_max_length=CAP, celebrity_threshold=3, aggregation_window_seconds=1_000_000_000
    )
    reader, push, pull = UserFactory(), UserFactory(), UserFactory()
    others = [UserFactory() for _ in range(2)]
    activate(reader, push, pull, *others)
    follow_create(follower_id=reader.pk, followee_id=push.pk)
    for fan in (reader, *others):
        follow_create(follower_id=fan.pk, followee_id=pull.pk)
    posted = []
    for i in range(3 * CAP):
        for author in (push, pull, reader):
            posted.append(publish(author, object_id=f"{author.pk}-{i}"))
    for activity in posted:
        wait_job(activity.id)
    return reader, push, pull, posted


@pytest.mark.parametrize("limit", [1, 4, 7, 13])
def test_the_feed_pages_past_the_cache_to_the_first_activity(three_sources, limit):
    reader, push, pull, posted = three_sources
    # Redis holds the newest CAP of the reader's feed and of the pull author's timeline only.
    assert len(store.feed_ids(reader.pk)) == CAP
    assert len(store.timeline_ids(pull.pk)) == CAP
    items, pages = page_through(auth_client(reader), limit)
    assert all(len(ids) == 1 for ids in items)  # distinct objects: no groups
    seen = [ids[0] for ids in items]
    assert seen == sorted((a.id for a in posted), reverse=True)  # all, once, newest first
    assert pages - -(-len(posted) // limit) in (0, 1)  # full pages (the last may be empty)


def test_a_group_spanning_the_edge_is_one_item_with_members_from_both_sides(three_sources):
    reader, push, pull, posted = three_sources
    # The push author stars one project long ago and again now: both members are one group
    # (one bucket), the old one below what the reader's Redis feed holds.
    old = Activity.objects.filter(actor=push).order_by("id").first()
    Activity.objects.filter(id=old.id).update(verb="starred", object_id="shared")
    store.client().delete(store.body_key(old.id))
    new = publish(push, object_id="shared")
    wait_job(new.id)
    assert old.id not in store.feed_ids(reader.pk) and new.id in store.feed_ids(reader.pk)
    for limit in (3, 5, 8):
        items, _ = page_through(auth_client(reader), limit)
        groups = [ids for ids in items if new.id in ids or old.id in ids]
        assert groups == [[new.id, old.id]]  # once, on its newest member's page
        flat = [i for ids in items for i in ids]
        heads = [ids[0] for ids in items]
        assert sorted(heads, reverse=True) == heads and len(flat) == len(set(flat))
        assert set(flat) == {a.id for a in posted} | {new.id}


def test_blocked_and_muted_authors_never_show_in_the_deep_pages(three_sources):
    reader, push, pull, posted = three_sources
    mute_create(muter_id=reader.pk, muted_id=push.pk)
    block_create(blocker_id=pull.pk, blocked_id=reader.pk)
    items, _ = page_through(auth_client(reader), 6)
    seen = [ids[0] for ids in items]
    assert seen == sorted((a.id for a in posted if a.actor_id == reader.pk), reverse=True)


def test_a_follow_made_now_brings_its_whole_history_past_the_cache(three_sources):
    reader, push, pull, posted = three_sources
    late = UserFactory()
    activate(late)
    theirs = [publish(late, object_id=f"late-{i}") for i in range(CAP)]
    for activity in theirs:
        wait_job(activity.id)
    follow_create(follower_id=reader.pk, followee_id=late.pk)
    items, _ = page_through(auth_client(reader), 9)
    seen = [ids[0] for ids in items]
    assert seen == sorted((a.id for a in [*posted, *theirs]), reverse=True)


@pytest.mark.parametrize("backfill", [0, 2])
def test_a_follow_whose_backfill_leaves_history_out_pages_it_from_postgresql(live_worker, backfill):
    feed_settings_update(feed_max_length=CAP, follow_backfill_count=backfill)
    reader, author = UserFactory(), UserFactory()
    activate(reader, author)
    posted = [publish(author, object_id=f"o{i}") for i in range(5)]
    for activity in posted:
        wait_job(activity.id)
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    newest = sorted((a.id for a in posted), reverse=True)
    held = store.feed_ids(reader.pk) if store.client().exists(store.feed_key(reader.pk)) else []
    assert held == newest[:backfill]  # the backfill only (an emptied feed is rebuilt on read)
    client = auth_client(reader)
    with CaptureQueriesContext(connection) as queries:
        items, _ = page_through(client, 2)
    assert [ids[0] for ids in items] == newest
    assert len(queries) < 20


def test_a_complete_feed_pages_without_postgresql(live_worker, django_assert_max_num_queries):
    """A feed never trimmed, whose follows brought their whole history (the built marker
    stays), is read to its end in Redis: no query below it."""
    feed_settings_update(feed_max_length=CAP)
    reader, author = UserFactory(), UserFactory()
    activate(reader, author)
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    posted = [publish(author, object_id=f"o{i}") for i in range(CAP - 2)]
    for activity in posted:
        wait_job(activity.id)
    client = auth_client(reader)
    assert page_through(client, 3)[0]  # warms the token and the settings
    with django_assert_max_num_queries(0):
        items, _ = page_through(client, 3)
    assert [ids[0] for ids in items] == sorted((a.id for a in posted), reverse=True)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plan")
@pytest.mark.django_db
def test_a_deep_page_is_one_query_on_indexes_of_activities_and_follows():
    from datetime import UTC, datetime, timedelta

    from django.contrib.auth import get_user_model

    from activities.ids import make_id
    from feeds.selectors import _home_sql
    from follows.models import Follow

    reader = UserFactory()
    # Many authors (a realistic spread: no one author is a large share of all activities).
    user = get_user_model()
    authors = user.objects.bulk_create([user(username=f"a{n}") for n in range(1_000)])
    Follow.objects.bulk_create([Follow(follower=reader, followee=a) for a in authors[:30]])
    others = user.objects.bulk_create([user(username=f"f{n}") for n in range(30)])
    Follow.objects.bulk_create(
        [Follow(follower=o, followee=a) for o in others for a in authors[:100]]
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for n in range(20_000):
        moment = start + timedelta(seconds=n)
        actor = authors[n % len(authors)]
        rows.append(
            Activity(
                id=make_id(moment),
                actor=actor,
                verb="v",
                object_type="t",
                object_id=str(n),
                time=moment,
            )
        )
    Activity.objects.bulk_create(rows, batch_size=5_000)
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
        params = {"user": reader.pk, "before": rows[10_000].id, "min": 0, "limit": 30}
        cur.execute("EXPLAIN " + _home_sql(), params)
        plan = "\n".join(r[0] for r in cur.fetchall())
    # (Mutes and blocks are empty here: the planner may read an empty table whole.)
    for table in (Activity._meta.db_table, Follow._meta.db_table):
        assert f"Seq Scan on {table}" not in plan, plan
    assert "Index Scan on activity_actor_id_desc" in plan or (
        "using activity_actor_id_desc" in plan
    ), plan  # each followee's newest by the (actor, -id) index
    assert "Scan using" in plan.split("on follows_follow")[0].rsplit("\n", 1)[-1], plan
