"""Objects as feed sources, the foundation (issue 27, points 1-4 and the admin of 9): an object is
``type:id`` with the rules of an activity's object_type and object_id, followed and unfollowed
through /api/objects/follow/ (ids with "/" in body fields and query parameters), its followers
counted exactly under concurrent follows and unfollows, its activities (as object or target)
paged exactly with blocked authors hidden, the caller's followed objects paged, the admin's list
read-only. Real PostgreSQL and Redis; the fan-out wiring of object sources is not here yet."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from activities.models import Activity
from activities.serializers import ActivityInSerializer
from activities.services import activity_delete, activity_publish
from feeds.services import feed_settings_update
from feedsite.shards import shard_order
from follows.models import ObjectFollow, ObjectStats
from follows.selectors import (
    audience_count,
    audience_id_boundaries,
    audience_ids_in_range,
    batch_ranges,
    followed_among,
    followed_objects,
    followed_objects_with_min_followers,
    object_activity_ids,
    object_activity_page,
    object_follower_count,
    object_follower_id_boundaries,
    object_follower_ids_in_range,
    objects_with_followers_in,
)
from follows.services import (
    block_create,
    follow_create,
    object_follow_create,
    object_follow_delete,
    object_stats_bump,
)
from tests.conftest import auth_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
REPO = {"type": "repo", "id": "octo/hello-world"}
FOLLOW = "/api/objects/follow/"


def follow(client: APIClient, type_: str = REPO["type"], id_: str = REPO["id"]):
    return client.post(FOLLOW, {"type": type_, "id": id_}, format="json")


def unfollow(client: APIClient, type_: str = REPO["type"], id_: str = REPO["id"]):
    # Query parameters, encoded by the client: "/" and "&" in an id stay in the value.
    return client.delete(FOLLOW + "?" + _query(type=type_, id=id_))


def _query(**params: object) -> str:
    from urllib.parse import urlencode

    return urlencode({k.rstrip("_"): v for k, v in params.items() if v is not None})


def describe(client: APIClient, type_: str = REPO["type"], id_: str = REPO["id"]):
    return client.get("/api/objects/?" + _query(type=type_, id=id_))


def count(object_type: str = REPO["type"], object_id: str = REPO["id"]) -> int:
    return object_follower_count(object_type=object_type, object_id=object_id)


def rows(object_type: str = REPO["type"], object_id: str = REPO["id"]) -> int:
    return ObjectFollow.objects.filter(object_type=object_type, object_id=object_id).count()


# --- 1. follow, unfollow, describe ---------------------------------------------------------------


def test_follow_is_201_then_200_with_the_object_and_unfollow_is_204_either_way():
    alice, bob = UserFactory(), UserFactory()
    a, b = auth_client(alice), auth_client(bob)
    first = follow(a)
    assert first.status_code == 201, first.content
    body = first.json()
    assert set(body) == {"type", "id", "followers_count", "is_celebrity", "created_at"}
    assert (body["type"], body["id"], body["followers_count"]) == ("repo", "octo/hello-world", 1)
    assert body["is_celebrity"] is False
    again = follow(a)
    assert again.status_code == 200
    assert again.json() == body  # the same follow: same created_at, counted once
    assert follow(b).json()["followers_count"] == 2
    assert describe(a).json() == {
        "type": "repo",
        "id": "octo/hello-world",
        "followers_count": 2,
        "is_celebrity": False,
    }
    assert unfollow(a).status_code == 204
    assert unfollow(a).status_code == 204  # no follow any more: still 204
    assert describe(b).json()["followers_count"] == 1 == count() == rows()
    assert unfollow(b, id_="never/followed").status_code == 204
    assert count("repo", "never/followed") == 0


def test_an_object_nobody_follows_answers_zero_followers_not_404():
    res = describe(auth_client(UserFactory()), "topic", "nobody-cares")
    assert res.status_code == 200
    assert res.json() == {
        "type": "topic",
        "id": "nobody-cares",
        "followers_count": 0,
        "is_celebrity": False,
    }


@pytest.mark.parametrize(
    "object_id",
    ["octo/hello-world", "a/b/c/../d", "/leading", "trailing/", "x?y=1&type=z", "100%/sure", "é/ü"],
)
def test_ids_with_slashes_and_url_characters_are_one_object(object_id):
    client = auth_client(UserFactory())
    res = follow(client, "repo", object_id)
    assert res.status_code == 201 and res.json()["id"] == object_id
    assert describe(client, "repo", object_id).json()["followers_count"] == 1
    assert ObjectFollow.objects.filter(object_type="repo", object_id=object_id).exists()
    listed = client.get("/api/me/objects/").json()["items"]
    assert [(i["type"], i["id"]) for i in listed] == [("repo", object_id)]
    assert unfollow(client, "repo", object_id).status_code == 204
    assert count("repo", object_id) == 0


def test_is_celebrity_follows_the_threshold():
    feed_settings_update(celebrity_threshold=2)
    a, b = auth_client(UserFactory()), auth_client(UserFactory())
    assert follow(a).json()["is_celebrity"] is False
    assert follow(b).json()["is_celebrity"] is True  # 2 followers: at the threshold
    assert describe(a).json()["is_celebrity"] is True
    unfollow(b)
    assert describe(a).json()["is_celebrity"] is False


def test_follow_and_unfollow_count_against_the_write_throttle_and_reads_do_not(settings):
    settings.FEEDSITE_THROTTLE_RATES = {**settings.FEEDSITE_THROTTLE_RATES, "write": "3/min"}
    client = auth_client(UserFactory())
    assert follow(client).status_code == 201
    assert unfollow(client).status_code == 204
    for _ in range(3):  # reads pass through
        assert describe(client).status_code == 200
        assert client.get("/api/me/objects/").status_code == 200
        assert client.get("/api/objects/activities/?type=repo&id=x").status_code == 200
    assert follow(client).status_code == 201
    refused = follow(client, id_="another/one")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert unfollow(client).status_code == 429
    assert count() == 1 and count("repo", "another/one") == 0


def test_anonymous_callers_get_401():
    anon = APIClient()
    assert follow(anon).status_code == 401
    assert unfollow(anon).status_code == 401
    assert describe(anon).status_code == 401
    assert anon.get("/api/objects/activities/?type=repo&id=x").status_code == 401
    assert anon.get("/api/me/objects/").status_code == 401


# --- 2. validation: the rules of a publish, 400 naming the field ---------------------------------

BAD = [
    ({"id": "x"}, "type"),
    ({"type": "repo"}, "id"),
    ({"type": "", "id": "x"}, "type"),
    ({"type": "repo", "id": ""}, "id"),
    ({"type": "   ", "id": "x"}, "type"),
    ({"type": "repo", "id": "  "}, "id"),
    ({"type": "t" * 65, "id": "x"}, "type"),
    ({"type": "repo", "id": "i" * 256}, "id"),
    ({"type": "re\x00po", "id": "x"}, "type"),
    ({"type": "repo", "id": "x\x00"}, "id"),
]


def names(body: dict, field: str) -> bool:
    """The answer names the field: its messages under its name, or (a JSON body the parser
    refuses, e.g. a NUL in a string, as for every endpoint) a detail that starts with it."""
    return bool(body.get(field)) or str(body.get("detail", "")).startswith(f"{field}:")


@pytest.mark.parametrize(("given", "field"), BAD, ids=lambda v: repr(v)[:40])
def test_missing_or_invalid_type_or_id_is_400_naming_it_everywhere(given, field):
    client = auth_client(UserFactory())
    answers = [client.post(FOLLOW, given, format="json")]
    query = "?" + _query(**given)
    answers.append(client.delete(FOLLOW + query))
    answers.append(client.get("/api/objects/" + query))
    answers.append(client.get("/api/objects/activities/" + query))
    for res in answers:
        assert res.status_code == 400, (res.request["REQUEST_METHOD"], res.content[:300])
        assert names(res.json(), field), res.json()
    assert not ObjectFollow.objects.exists() and not ObjectStats.objects.exists()


def test_non_string_type_or_id_in_a_body_is_400():
    client = auth_client(UserFactory())
    for given, field in [({"type": ["a"], "id": "x"}, "type"), ({"type": "a", "id": {}}, "id")]:
        res = client.post(FOLLOW, given, format="json")
        assert res.status_code == 400 and field in res.json()
    for body in (["repo", "x"], "repo:x", 7):  # not an object at all: both fields named
        res = client.post(FOLLOW, body, format="json")
        assert res.status_code == 400 and {"type", "id"} <= set(res.json()), res.content


@pytest.mark.parametrize(
    "value",
    ["a", "t" * 64, "t" * 65, "i" * 255, "i" * 256, "", " ", "  padded  ", "x\x00y", "a:b/c"],
    ids=lambda v: repr(v)[:20],
)
def test_an_object_is_valid_exactly_when_a_publish_would_accept_it(value):
    """Not a copy of the rules: the same fields (activities.serializers.object_type_field and
    object_id_field), so what a publish accepts as object_type/object_id, a follow accepts as
    type/id, trimmed the same way."""
    publish = ActivityInSerializer(data={"verb": "v", "object_type": value, "object_id": value})
    publish_ok = publish.is_valid()
    client = auth_client(UserFactory())
    res = client.post(FOLLOW, {"type": value, "id": value}, format="json")
    assert (res.status_code == 201) == publish_ok, (res.content, publish.errors)
    if publish_ok:
        assert res.json()["type"] == publish.validated_data["object_type"]
        assert res.json()["id"] == publish.validated_data["object_id"]
    else:
        assert set(publish.errors) >= {"object_type"} or set(publish.errors) >= {"object_id"}
        assert names(res.json(), "type") or names(res.json(), "id")


# --- 1. counters: exact, never below zero, whatever path changes a follow --------------------------


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL (SQLite locks)"
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_follows_and_unfollows_of_one_object_keep_the_count_exact():
    """Twelve threads, two per user: the same follow row is created, and deleted, by two
    transactions at once (the unique constraint and the row lock decide), and every user's
    first follow races the counter row's insert."""
    users = [UserFactory() for _ in range(6)]
    workers = [users[n % len(users)].pk for n in range(12)]
    errors: list[BaseException] = []
    created: list[bool] = []
    start = threading.Barrier(len(workers), timeout=60)
    hot = {"object_type": "repo", "object_id": "hot/one"}

    def together(*steps) -> None:
        """Each step after every thread is ready; no pooled connection held across a wait
        (the pool has 8)."""
        try:
            for step in steps:
                start.wait()
                try:
                    step()
                finally:
                    connection.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def storm(user_id: int, seed: int):
        def run() -> None:
            rng = random.Random(seed)
            for _ in range(30):
                if rng.random() < 0.5:
                    object_follow_create(user_id=user_id, **hot)
                else:
                    object_follow_delete(user_id=user_id, **hot)

        return run

    def run_all(make_steps) -> None:
        threads = [
            threading.Thread(target=together, args=make_steps(uid, n))
            for n, uid in enumerate(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert not errors, errors

    run_all(
        lambda uid, n: (
            lambda: object_follow_create(user_id=uid, **hot),  # first follows, twins at once
            storm(uid, n),
        )
    )
    assert count(**hot) == rows(**hot)
    run_all(  # everyone unfollows twice at once, then follows again at once
        lambda uid, n: (
            lambda: [object_follow_delete(user_id=uid, **hot) for _ in range(2)],
            lambda: created.append(object_follow_create(user_id=uid, **hot)[1]),
        )
    )
    assert created.count(True) == len(users)  # each twin pair: one created, one found it
    assert count(**hot) == rows(**hot) == len(users)
    run_all(lambda uid, n: (lambda: object_follow_delete(user_id=uid, **hot),))
    assert count(**hot) == rows(**hot) == 0


def test_the_counter_never_goes_below_zero():
    user = UserFactory()
    object_follow_create(user_id=user.pk, object_type="repo", object_id="x")
    object_follow_delete(user_id=user.pk, object_type="repo", object_id="x")
    assert count("repo", "x") == 0
    with pytest.raises(IntegrityError), transaction.atomic():
        object_stats_bump(object_type="repo", object_id="x", delta=-1)  # the check constraint
    with pytest.raises(IntegrityError), transaction.atomic():
        ObjectStats.objects.filter(object_type="repo", object_id="x").update(followers_count=-5)
    object_stats_bump(object_type="repo", object_id="never", delta=-1)  # no row: none made
    assert not ObjectStats.objects.filter(object_id="never").exists()
    assert count("repo", "x") == 0


def test_a_deleted_users_object_follows_leave_the_counts():
    leaving, staying = UserFactory(), UserFactory()
    for user in (leaving, staying):
        object_follow_create(user_id=user.pk, object_type="repo", object_id="a/b")
    object_follow_create(user_id=leaving.pk, object_type="channel", object_id="general")
    leaving.delete()  # the cascade deletes the rows; their signals reach the counters
    assert count("repo", "a/b") == 1 == rows("repo", "a/b")
    assert count("channel", "general") == 0 == rows("channel", "general")


# --- 3. an object's activities -----------------------------------------------------------------


def _publish(actor, *, object_id="x", target_id="", object_type="repo", target_type="", **more):
    data = {"verb": "v", "object_type": object_type, "object_id": object_id, **more}
    if target_id:
        data.update(target_type=target_type or object_type, target_id=target_id)
    return activity_publish(actor_id=actor.pk, data=data)[0]


def _page_all(client: APIClient, url: str, limit: int) -> tuple[list[str], int]:
    seen, pages, cursor = [], 0, None
    while True:
        res = client.get(url + f"&limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        assert res.status_code == 200, res.content
        body = res.json()
        assert len(body["items"]) <= limit
        seen += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, pages
        assert res["Link"].endswith('>; rel="next"')


def test_an_objects_activities_as_object_or_target_newest_first_paged_exactly():
    author, other, reader = UserFactory(), UserFactory(), UserFactory()
    want = []
    for n in range(13):
        actor = author if n % 2 else other
        if n % 3 == 0:
            a = _publish(actor, object_id="octo/repo")  # about it
        elif n % 3 == 1:
            a = _publish(actor, object_id=f"issue-{n}", object_type="issue", target_id="octo/repo",
                         target_type="repo")  # fmt: skip
        else:
            a = _publish(actor, object_id="octo/repo", target_id="octo/repo")  # both: once
        want.append(a)
    _publish(author, object_id="octo/repo2")  # another object
    _publish(author, object_id="octo/repo", object_type="fork")  # another type, same id
    _publish(author, object_id="octo", target_id="repo")  # not "octo/repo" split in two
    _publish(author, object_id="octo/repo", home=False)  # no home feed: not listed
    gone = _publish(author, object_id="octo/repo")
    activity_delete(activity=gone)
    client = auth_client(reader)
    url = "/api/objects/activities/?" + _query(type="repo", id="octo/repo")
    expected = [str(a.id) for a in sorted(want, key=lambda a: a.id, reverse=True)]
    for limit in (1, 4, 13, 100):
        seen, pages = _page_all(client, url, limit)
        assert seen == expected, limit
        assert pages == max(1, -(-len(expected) // limit))
    first = client.get(url + "&limit=2").json()
    assert first["items"][0]["object_id"] == "octo/repo"  # the public JSON of each
    assert set(first["items"][0]) >= {"id", "actor", "verb", "object_type", "target_id", "time"}
    # Newer arrivals do not shift the pages below a cursor.
    _publish(author, object_id="octo/repo")
    rest = client.get(url + f"&limit=100&cursor={first['next_cursor']}").json()["items"]
    assert [i["id"] for i in rest] == expected[2:]


def test_an_objects_activities_hide_authors_blocked_either_way():
    reader, blocker, blocked, friend = (UserFactory() for _ in range(4))
    ids = {u: _publish(u, object_id="hub").id for u in (blocker, blocked, friend)}
    _publish(blocker, object_id="t1", target_id="hub")
    block_create(blocker_id=blocker.pk, blocked_id=reader.pk)  # blocks the reader
    block_create(blocker_id=reader.pk, blocked_id=blocked.pk)  # the reader blocks them
    url = "/api/objects/activities/?type=repo&id=hub&limit=10"
    items = auth_client(reader).get(url).json()["items"]
    assert [i["id"] for i in items] == [str(ids[friend])]
    everyone = auth_client(UserFactory()).get(url).json()["items"]
    assert len(everyone) == 4  # the others see them all


def test_an_objects_activities_refuse_a_cursor_of_another_list_and_bad_paging():
    client = auth_client(UserFactory())
    for object_id in ("a", "b"):
        follow(client, "repo", object_id)
    foreign = client.get("/api/me/objects/?limit=1").json()["next_cursor"]
    assert foreign
    url = "/api/objects/activities/?type=repo&id=hub"
    for bad in (foreign, "garbage", "1:2", "x" * 50):
        res = client.get(f"{url}&cursor={bad}")
        assert res.status_code == 400 and "cursor" in res.json(), res.content
    for limit in ("0", "101", "x"):
        res = client.get(f"{url}&limit={limit}")
        assert res.status_code == 400 and "limit" in res.json()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plan")
def test_an_objects_activities_are_one_query_on_the_object_and_target_indexes(
    django_assert_num_queries,
):
    from activities.ids import make_id

    user = get_user_model()
    authors = user.objects.bulk_create([user(username=f"oa{n}") for n in range(200)])
    reader = UserFactory()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch = []
    for n in range(20_000):
        moment = start + timedelta(seconds=n)
        # 2,000 objects; every 7th activity happens in a target (one of 300).
        target = {"target_type": "repo", "target_id": f"r{n % 300}"} if n % 7 == 0 else {}
        batch.append(
            Activity(
                id=make_id(moment),
                actor=authors[n % len(authors)],
                verb="v",
                object_type="repo",
                object_id=f"r{n % 2_000}",
                time=moment,
                **target,
            )
        )
    Activity.objects.bulk_create(batch, batch_size=5_000)
    block_create(blocker_id=reader.pk, blocked_id=authors[0].pk)
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    with CaptureQueriesContext(connection) as captured:
        page = object_activity_page(
            object_type="repo", object_id="r7", viewer_id=reader.pk, before_id=None, limit=20
        )
    assert len(captured.captured_queries) == 1
    expected = [
        a.id
        for a in sorted(batch, key=lambda a: a.id, reverse=True)
        if "r7" in (a.object_id, a.target_id) and a.actor_id != authors[0].pk
    ][:20]
    assert [a.id for a in page] == expected
    with connection.cursor() as cur:
        cur.execute("EXPLAIN " + captured.captured_queries[0]["sql"])
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert f"Seq Scan on {Activity._meta.db_table}" not in plan, plan
    assert "activity_object_id_desc" in plan and "activity_target_id_desc" in plan, plan
    with django_assert_num_queries(1):
        ids = object_activity_ids(object_type="repo", object_id="r7", before_id=None, limit=20)
    assert ids[:5] == [
        a.id for a in sorted(batch, key=lambda a: a.id, reverse=True) if "r7" in (a.object_id, a.target_id)
    ][:5]  # fmt: skip


# --- 4. the objects one follows ----------------------------------------------------------------


def test_me_objects_lists_what_i_follow_newest_first_paged_exactly():
    me, other = UserFactory(), UserFactory()
    client = auth_client(me)
    names = [("repo", f"o/{n}") for n in range(7)] + [("channel", "general"), ("topic", "#py")]
    for object_type, object_id in names:
        assert follow(client, object_type, object_id).status_code == 201
    object_follow_create(user_id=other.pk, object_type="repo", object_id="not/mine")
    unfollow(client, "repo", "o/3")
    want = [f"{t}:{i}" for t, i in reversed(names) if i != "o/3"]
    for limit in (1, 3, 8, 100):
        seen, cursor = [], None
        while True:
            url = f"/api/me/objects/?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            body = client.get(url).json()
            assert set(body) == {"items", "next_cursor"}
            assert all(set(i) == {"type", "id", "created_at"} for i in body["items"])
            seen += [f"{i['type']}:{i['id']}" for i in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == want, limit
    assert auth_client(other).get("/api/me/objects/").json()["items"][0]["id"] == "not/mine"


# --- for the fan-out wiring: followers in shard order, one audience over every source ---------------


def test_an_objects_followers_in_shard_order_batches_cover_each_once():
    users = [UserFactory() for _ in range(11)]
    for u in users[:9]:
        object_follow_create(user_id=u.pk, object_type="repo", object_id="x/y")
    object_follow_create(user_id=users[9].pk, object_type="repo", object_id="other")
    boundaries = object_follower_id_boundaries(object_type="repo", object_id="x/y", batch_size=4)
    assert len(boundaries) == 2  # 9 followers: batches of 4, 4, 1
    seen = []
    for lo, hi in batch_ranges(boundaries):
        part = object_follower_ids_in_range(object_type="repo", object_id="x/y", lo=lo, hi=hi)
        assert part == sorted(part, key=shard_order)
        seen += part
    assert sorted(seen) == sorted(u.pk for u in users[:9])
    assert seen == sorted(seen, key=shard_order)
    assert object_follower_count(object_type="repo", object_id="x/y") == 9


def test_an_audience_over_author_object_and_target_counts_each_user_once():
    author = UserFactory()
    users = [UserFactory() for _ in range(10)]
    for u in users[:6]:
        follow_create(follower_id=u.pk, followee_id=author.pk)
    for u in users[3:9]:  # 3 shared with the author's followers
        object_follow_create(user_id=u.pk, object_type="repo", object_id="a/b")
    for u in users[5:10]:  # the target: shared with both
        object_follow_create(user_id=u.pk, object_type="org", object_id="a")
    sources = [("repo", "a/b"), ("org", "a"), ("repo", "a/b")]
    everyone = sorted(u.pk for u in users)
    assert audience_count(author_id=author.pk, objects=sources) == 10
    boundaries = audience_id_boundaries(author_id=author.pk, objects=sources, batch_size=3)
    assert len(boundaries) == 3
    seen = []
    for lo, hi in batch_ranges(boundaries):
        seen += audience_ids_in_range(author_id=author.pk, objects=sources, lo=lo, hi=hi)
    assert sorted(seen) == everyone and len(seen) == len(set(seen))
    assert seen == sorted(seen, key=shard_order)
    assert audience_ids_in_range(author_id=None, objects=[("org", "a")], lo=None, hi=None) == (
        sorted((u.pk for u in users[5:10]), key=shard_order)
    )
    assert audience_count(author_id=None, objects=[]) == 0


def test_the_selectors_of_a_readers_followed_objects():
    reader, fans = UserFactory(), [UserFactory() for _ in range(3)]
    for object_id in ("big", "small", "mid"):
        object_follow_create(user_id=reader.pk, object_type="repo", object_id=object_id)
    for fan in fans:
        object_follow_create(user_id=fan.pk, object_type="repo", object_id="big")
    object_follow_create(user_id=fans[0].pk, object_type="repo", object_id="mid")
    assert sorted(followed_objects(user_id=reader.pk)) == [
        ("repo", "big"),
        ("repo", "mid"),
        ("repo", "small"),
    ]
    pulled = followed_objects_with_min_followers(user_id=reader.pk, min_followers=2)
    assert sorted(pulled) == [("repo", "big"), ("repo", "mid")]
    assert followed_among(
        user_id=reader.pk, objects=[("repo", "mid"), ("org", "mid"), ("repo", "none")]
    ) == {("repo", "mid")}
    assert objects_with_followers_in(lo=2, hi=4) == [("repo", "mid")]  # big has 4
    assert sorted(objects_with_followers_in(lo=1, hi=5)) == [
        ("repo", "big"),
        ("repo", "mid"),
        ("repo", "small"),
    ]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plan")
def test_an_objects_follower_ranges_can_use_the_shard_order_index():
    """The selector's SQL and the index's expression are the same to PostgreSQL (with
    sequential scans off, the plan must take the index rather than fail over to a scan)."""
    user = UserFactory()
    object_follow_create(user_id=user.pk, object_type="repo", object_id="x")
    with CaptureQueriesContext(connection) as captured:
        object_follower_ids_in_range(object_type="repo", object_id="x", lo=5, hi=10**12)
        object_follower_id_boundaries(object_type="repo", object_id="x", batch_size=3)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        for query in captured.captured_queries:
            cur.execute("EXPLAIN " + query["sql"])
            plan = "\n".join(r[0] for r in cur.fetchall())
            assert "objectfollow_object_shard" in plan, plan
            assert "Sort" not in plan, plan  # read in shard order from the index


# --- 9. the admin --------------------------------------------------------------------------------


@pytest.fixture
def admin_browser() -> Client:
    admin = get_user_model().objects.create_superuser("root", password="pw-for-tests-only")
    browser = Client()
    browser.force_login(admin)
    return browser


def test_the_admin_lists_followed_objects_with_counts_searchable(admin_browser):
    for n, (object_type, object_id) in enumerate(
        [("repo", "octo/hello"), ("repo", "octo/world"), ("channel", "octo")]
    ):
        for _ in range(n + 1):
            object_follow_create(
                user_id=UserFactory().pk, object_type=object_type, object_id=object_id
            )

    def listed(query: str = "") -> list[tuple[str, str, int]]:
        res = admin_browser.get("/admin/follows/objectstats/" + query)
        assert res.status_code == 200, res.content[:500]
        return [
            (r.object_type, r.object_id, r.followers_count) for r in res.context["cl"].result_list
        ]

    assert listed() == [
        ("channel", "octo", 3),
        ("repo", "octo/world", 2),
        ("repo", "octo/hello", 1),
    ]
    assert listed("?q=repo") == [("repo", "octo/world", 2), ("repo", "octo/hello", 1)]
    assert listed("?q=octo/w") == [("repo", "octo/world", 2)]  # the id by its start
    assert listed("?q=repo%3Aocto%2Fhello") == [("repo", "octo/hello", 1)]  # type:id exactly
    assert listed("?q=nothing") == []
    follows = admin_browser.get("/admin/follows/objectfollow/?q=repo%3Aocto%2Fworld")
    assert follows.status_code == 200 and len(follows.context["cl"].result_list) == 2


def test_the_admin_edits_no_counter_by_hand(admin_browser):
    user = UserFactory()
    object_follow_create(user_id=user.pk, object_type="repo", object_id="r")
    stats = ObjectStats.objects.get(object_type="repo", object_id="r")
    change = f"/admin/follows/objectstats/{stats.pk}/change/"
    view = admin_browser.get(change)
    assert view.status_code == 200  # view only
    assert "followers_count" not in view.context["adminform"].form.fields
    forged = {"object_type": "repo", "object_id": "r", "followers_count": "999"}
    assert admin_browser.post(change, forged).status_code == 403
    assert admin_browser.get("/admin/follows/objectstats/add/").status_code == 403
    deleted = admin_browser.post(f"/admin/follows/objectstats/{stats.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 403
    assert count("repo", "r") == 1

    # Follows added and deleted in the admin are follows: the counter moves with them.
    other = UserFactory()
    added = admin_browser.post(
        "/admin/follows/objectfollow/add/",
        {"user": str(other.pk), "object_type": "repo", "object_id": "r"},
    )
    assert added.status_code == 302, added.content[:2000]
    assert count("repo", "r") == 2
    twice = admin_browser.post(
        "/admin/follows/objectfollow/add/",
        {"user": str(other.pk), "object_type": "repo", "object_id": "r"},
    )
    assert twice.status_code == 200 and count("repo", "r") == 2  # the form refuses a duplicate
    row = ObjectFollow.objects.get(user=other)
    edit = admin_browser.get(f"/admin/follows/objectfollow/{row.pk}/change/")
    assert not set(edit.context["adminform"].form.fields) & {"user", "object_type", "object_id"}
    gone = admin_browser.post(f"/admin/follows/objectfollow/{row.pk}/delete/", {"post": "yes"})
    assert gone.status_code == 302
    assert count("repo", "r") == 1 == rows("repo", "r")
