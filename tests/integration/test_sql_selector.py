"""The home feed read in PostgreSQL (feeds.selectors.home_activities_page: fan-out on read, the
benchmark's SQL rival and the read of pages past the cache): newest first across the reader and
their followees, hidden authors and non-home or deleted activities left out, bodies exactly the
API's, one query, by index range scans. PostgreSQL only (LATERAL)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.db import connection

from activities.ids import make_id
from activities.models import Activity
from activities.selectors import activities_by_ids, activity_to_dict
from feeds import selectors
from feeds.selectors import home_activities_page
from follows.models import Block, Follow, Mute
from tests.factories import UserFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="PostgreSQL only: set DATABASE_URL"
    ),
]

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _post(actor, n: int, *, start: int = 0, **fields) -> list[int]:
    """n activities of ``actor`` at distinct times (microseconds included: the API shows
    milliseconds), oldest first; their ids."""
    rows = []
    for k in range(n):
        moment = T0 + timedelta(seconds=start + k * 7, microseconds=123_456 + k)
        rows.append(
            Activity(
                id=make_id(moment),
                actor=actor,
                time=moment,
                verb="starred",
                object_type="project",
                object_id=f"p-{start + k}",
                **fields,
            )
        )
    Activity.objects.bulk_create(rows)
    return [a.id for a in rows]


def _follow(reader, *authors) -> None:
    Follow.objects.bulk_create([Follow(follower=reader, followee=a) for a in authors])


def test_newest_first_across_followees_and_own_with_the_api_bodies():
    reader, a, b, stranger = (UserFactory() for _ in range(4))
    _follow(reader, a, b)
    expected = _post(a, 5, start=0) + _post(b, 5, start=3) + _post(reader, 2, start=5)
    _post(stranger, 4, start=1)  # not followed
    _post(a, 2, start=100, home=False)  # a follow's notification: in no home feed
    deleted = _post(b, 1, start=200)
    Activity.objects.filter(id__in=deleted).delete()
    Activity.objects.filter(id=expected[0]).update(
        metadata={"tags": ["x", "y"], "n": 1}, foreign_id="ext-1", target_title='say "hi"'
    )

    rows = home_activities_page(user_id=reader.pk, limit=100)

    assert [r.id for r in rows] == sorted(expected, reverse=True)
    loaded = activities_by_ids(expected)
    for row in rows:
        assert orjson.loads(row.body) == activity_to_dict(loaded[row.id])
    assert orjson.loads(rows[-1].body)["metadata"] == {"tags": ["x", "y"], "n": 1}


def test_pages_by_before_id_and_limit_read_everything_once():
    reader, *authors = (UserFactory() for _ in range(4))
    _follow(reader, *authors)
    rng = random.Random(3)
    expected = sorted(
        (i for n, a in enumerate(authors) for i in _post(a, rng.randrange(5, 15), start=n)),
        reverse=True,
    )
    seen: list[int] = []
    before = None
    while True:
        page = home_activities_page(user_id=reader.pk, limit=7, before_id=before)
        assert len(page) <= 7
        seen += [r.id for r in page]
        if len(page) < 7:
            break
        before = page[-1].id
    assert seen == expected
    # min_id: an inclusive lower bound (a range of ids, as a cursor's bucket needs).
    lo, hi = expected[9], expected[3]
    ranged = home_activities_page(user_id=reader.pk, limit=100, before_id=hi, min_id=lo)
    assert [r.id for r in ranged] == expected[4:10]


def test_hidden_authors_are_left_out():
    reader, muted, blocked, blocker, kept = (UserFactory() for _ in range(5))
    _follow(reader, muted, blocked, blocker, kept)
    for author in (muted, blocked, blocker):
        _post(author, 3)
    shown = _post(kept, 3, start=1)
    Mute.objects.create(muter=reader, muted=muted)
    # A block removes follows both ways (follows.services); rows made directly show that the
    # read itself hides the author either way, should a follow outlive the block.
    Block.objects.create(blocker=reader, blocked=blocked)
    Block.objects.create(blocker=blocker, blocked=reader)

    rows = home_activities_page(user_id=reader.pk, limit=50)

    assert [r.id for r in rows] == sorted(shown, reverse=True)


def test_one_query(django_assert_num_queries):
    reader, *authors = (UserFactory() for _ in range(6))
    _follow(reader, *authors)
    for n, a in enumerate(authors):
        _post(a, 10, start=n)
    with django_assert_num_queries(1):
        rows = home_activities_page(
            user_id=reader.pk, limit=20, before_id=make_id(T0 + timedelta(1))
        )
    assert len(rows) == 20


def test_the_plan_takes_each_followee_by_the_actor_id_index():
    """On enough rows that the planner weighs its choices (60 authors x 150 activities written
    in time order, as a live service writes them; 40 readers following 25 each; ANALYZEd):
    index range scans of activity_actor_id_desc per followee, never a scan of the activities
    table, nor every row of an author sorted."""
    users = UserFactory.create_batch(100)
    authors, readers = users[:60], users[60:]
    rows = [
        Activity(
            id=make_id(moment),
            actor=a,
            time=moment,
            verb="starred",
            object_type="project",
            object_id=f"p-{k}",
        )
        for k in range(150)
        for n, a in enumerate(authors)
        for moment in [T0 + timedelta(seconds=k * 60 + n)]
    ]
    Activity.objects.bulk_create(rows)
    rng = random.Random(5)
    Follow.objects.bulk_create(
        [Follow(follower=r, followee=a) for r in readers for a in rng.sample(authors, 25)]
    )
    with connection.cursor() as cur:
        cur.execute("ANALYZE activities_activity; ANALYZE follows_follow")
    home_activities_page(user_id=readers[0].pk, limit=1)  # the query text, built once
    params = {"user": readers[0].pk, "before": 2**53, "min": 0, "limit": 30}
    with connection.cursor() as cur:
        cur.execute("EXPLAIN " + selectors._HOME_SQL, params)
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert "Index Scan using activity_actor_id_desc on activities_activity" in plan, plan
    assert "Seq Scan on activities_activity" not in plan, plan
    assert "Bitmap Heap Scan on activities_activity" not in plan, plan
    # Each author's range is read in index order and cut at the limit: no sort below it.
    per_author = plan.split("activity_actor_id_desc")[0].rsplit("->", 2)[-2]
    assert "Limit" in per_author, plan
