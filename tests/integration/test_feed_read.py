"""GET /api/feed/ on real Redis and the database, with fan-out through the real worker."""

from __future__ import annotations

import pytest

from activities.models import Activity
from feeds import store
from feeds.models import FanoutJob
from feeds.services import feed_settings_update
from follows.services import follow_create, follow_delete
from tests.conftest import auth_client, wait_until
from tests.factories import UserFactory

pytestmark = pytest.mark.worker
T0 = "2024-03-01T10:00:00.000Z"


def post(user, object_id="p1", verb="starred", time=None, **extra) -> str:
    body = {"verb": verb, "object_type": "project", "object_id": object_id, **extra}
    if time:
        body["time"] = time
    res = auth_client(user).post("/api/activities/", body, format="json")
    assert res.status_code == 201, res.content
    aid = res.json()["id"]
    wait_until(lambda: FanoutJob.objects.filter(activity_id=int(aid), state="done").exists())
    return aid


def read_all(user, limit=20) -> list[dict]:
    client, items, cursor = auth_client(user), [], None
    for _ in range(200):
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        res = client.get("/api/feed/", params)
        assert res.status_code == 200, res.content
        items += res.json()["items"]
        cursor = res.json()["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("paging did not end")


def all_ids(items) -> list[str]:
    return [aid for item in items for aid in item["activity_ids"]]


def test_feed_is_newest_first_and_pages_equal_timestamps_exactly_once(live_worker):
    feed_settings_update(aggregation_window_seconds=1)
    author, reader = UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    ids = [post(author, object_id=f"p{i}", time=T0) for i in range(7)]  # the same millisecond
    ids += [post(author, object_id=f"q{i}") for i in range(3)]
    items = read_all(reader, limit=3)
    assert sorted(all_ids(items)) == sorted(ids)
    assert len(all_ids(items)) == len(set(all_ids(items))) == 10
    got = [int(i) for i in all_ids(items)]
    assert got == sorted(got, reverse=True)
    assert items[0]["actor"]["username"] == author.username and items[0]["actor_count"] == 1


def test_paging_while_new_activities_arrive(live_worker):
    feed_settings_update(aggregation_window_seconds=1)
    author, reader = UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    before = [post(author, object_id=f"p{i}") for i in range(6)]
    client = auth_client(reader)
    first = client.get("/api/feed/", {"limit": 2}).json()
    late = post(author, object_id="late")
    rest, cursor = [], first["next_cursor"]
    while cursor:
        page = client.get("/api/feed/", {"limit": 2, "cursor": cursor}).json()
        rest += page["items"]
        cursor = page["next_cursor"]
    seen = all_ids(first["items"]) + all_ids(rest)
    assert sorted(seen) == sorted(before) and late not in seen
    assert (
        client.get("/api/feed/").json()["items"][0]["id"] == late
    )  # on top of the next fresh read


def test_aggregation_across_authors_with_actor_list(live_worker):
    feed_settings_update(aggregation_window_seconds=3600)
    reader = UserFactory()
    stars = [UserFactory(username=f"fan{i}") for i in range(7)]
    for s in stars:
        follow_create(follower_id=reader.pk, followee_id=s.pk)
    ids = [post(s, object_id="project-x", object_title="project-x") for s in stars]
    ids.append(post(stars[0], object_id="project-x"))  # a repeat actor
    other = post(stars[1], object_id="project-y")
    items = read_all(reader)
    assert len(items) == 2
    group = next(i for i in items if i["object_id"] == "project-x")
    assert group["actor_count"] == 7
    assert [a["username"] for a in group["actors"]] == ["fan0", "fan6", "fan5", "fan4", "fan3"]
    assert group["activity_ids"] == sorted(ids, key=int, reverse=True)
    assert group["id"] == group["activity_ids"][0]
    assert next(i for i in items if i["object_id"] == "project-y")["activity_ids"] == [other]


def test_celebrity_posts_are_merged_and_deduplicated_with_pushed_ones(live_worker):
    feed_settings_update(celebrity_threshold=3, aggregation_window_seconds=1)
    star, normal, reader = UserFactory(), UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=star.pk)
    follow_create(follower_id=reader.pk, followee_id=normal.pk)
    pushed_while_small = post(star, object_id="early")  # 1 follower: pushed
    assert all_ids(read_all(reader)) == [pushed_while_small]  # caches the reader's pull authors
    for _ in range(2):
        follow_create(follower_id=UserFactory().pk, followee_id=star.pk)
    pulled = post(star, object_id="late")  # 3 followers now: pull
    assert FanoutJob.objects.get(activity_id=int(pulled)).strategy == "pull"
    mine = post(normal, object_id="n1")
    # The early one is pushed and also on the star's timeline: shown once.
    assert int(pushed_while_small) in store.feed_ids(reader.pk)
    assert all_ids(read_all(reader)) == sorted(
        [pushed_while_small, pulled, mine], key=int, reverse=True
    )
    follow_delete(follower_id=reader.pk, followee_id=star.pk)
    assert all_ids(read_all(reader)) == [mine]
    follow_create(follower_id=reader.pk, followee_id=star.pk)
    assert pulled in all_ids(read_all(reader))


def test_deleted_activity_never_shows_even_with_a_stale_entry(live_worker):
    author, reader = UserFactory(), UserFactory()
    read_all(reader)  # an active reader: fan-out writes to the built feed
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    keep, gone = post(author, object_id="keep"), post(author, object_id="gone")
    # Delete behind the service's back (no remove job): the feed still holds the id.
    Activity.objects.filter(id=int(gone)).delete()
    store.delete_body(int(gone))
    assert int(gone) in store.feed_ids(reader.pk)
    assert all_ids(read_all(reader)) == [keep]


def test_missing_bodies_are_loaded_from_the_database_and_cached_again(live_worker):
    author, reader = UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    aid = post(author, object_id="cached")
    store.delete_body(int(aid))
    items = read_all(reader)
    assert items[0]["id"] == aid and items[0]["object_id"] == "cached"
    assert store.get_bodies([int(aid)])


@pytest.mark.django_db
def test_feed_rejects_bad_limit_and_cursor():
    client = auth_client(UserFactory())
    for bad in ({"limit": 0}, {"limit": 101}, {"limit": "x"}):
        res = client.get("/api/feed/", bad)
        assert res.status_code == 400 and "limit" in res.json()
    for cursor in ("x", "eyJ0IjoxfQ.AAAA", "a.b.c"):
        res = client.get("/api/feed/", {"cursor": cursor})
        assert res.status_code == 400 and "cursor" in res.json()
    assert client.get("/api/feed/").json() == {"items": [], "next_cursor": None}
    assert client.get("/api/feed/", {"user_id": 1}).status_code == 200


@pytest.mark.django_db
def test_hydration_is_bulk(django_assert_max_num_queries):
    author, reader = UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    from activities.services import activity_publish

    ids = [
        activity_publish(
            actor_id=author.pk, data={"verb": "v", "object_type": "t", "object_id": f"o{i}"}
        )[0].id
        for i in range(30)
    ]
    from tests.conftest import activate

    FanoutJob.objects.filter(activity_id__in=ids).update(strategy="push", state="done")
    activate(reader)  # the feed is built; bodies are not cached: all come from the database
    store.client().delete(*[store.body_key(i) for i in ids])
    client = auth_client(reader)
    from feeds.conf import get_conf

    get_conf()  # the settings snapshot is cached (Redis) like on any warm server
    # token, pull authors, hidden authors (mutes, blocks), one bulk body load and its check
    # after caching (feeds.hydrate._refill_confirm)
    with django_assert_max_num_queries(5):
        res = client.get("/api/feed/", {"limit": 30})
    assert len(res.json()["items"]) == 30
    with django_assert_max_num_queries(0):  # warm: token, pull and hidden authors, bodies cached
        again = client.get("/api/feed/", {"limit": 30})
    assert again.json() == res.json()


@pytest.mark.django_db
def test_feed_reads_are_throttled_per_user_with_retry_after(settings):
    from feeds.throttles import FeedReadThrottle

    old = FeedReadThrottle.rate
    FeedReadThrottle.rate = "3/min"
    try:
        ana, bo = UserFactory(), UserFactory()
        client = auth_client(ana)  # (the budget is per token: a forged one spends nobody's)
        codes = [client.get("/api/feed/").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        res = client.get("/api/feed/")
        assert res.status_code == 429 and 0 < int(res["Retry-After"]) <= 60
        assert auth_client(bo).get("/api/feed/").status_code == 200  # others unaffected
    finally:
        FeedReadThrottle.rate = old


@pytest.mark.django_db
def test_pull_author_list_is_cached_and_dropped_on_follow(django_capture_on_commit_callbacks):
    star, reader = UserFactory(), UserFactory()
    feed_settings_update(celebrity_threshold=1)
    client = auth_client(reader)
    client.get("/api/feed/")

    def cached():
        _, raw, version = store.begin_read(reader.pk, 0)
        return store.pull_authors_from_cache(raw, f"1.{version}")

    assert cached() == []  # cached: no pull authors
    with django_capture_on_commit_callbacks(execute=True):
        follow_create(follower_id=reader.pk, followee_id=star.pk)  # star has 1 follower: pull
    assert cached() is None  # the follow dropped the cached list
    client.get("/api/feed/")
    assert cached() == [star.pk]


@pytest.mark.django_db
@pytest.mark.skipif(
    store.is_cluster(), reason="one Redis: on a cluster each phase is one round per node"
)
@pytest.mark.parametrize("id_token", [True, False], ids=["id-token", "plain-token"])
def test_warm_read_is_one_redis_round_trip_and_no_sql(
    settings, monkeypatch, django_assert_num_queries, id_token
):
    from redis.connection import AbstractConnection
    from rest_framework.test import APIClient

    from activities.services import activity_publish
    from tests.conftest import activate, make_token

    settings.FEEDSITE_SETTINGS_LOCAL_SECONDS = 60  # as in service: settings cached in process
    star, author, reader = UserFactory(), UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    follow_create(follower_id=reader.pk, followee_id=star.pk)
    feed_settings_update(celebrity_threshold=1)  # star (1 follower) and author: pull authors
    for i in range(25):
        activity_publish(
            actor_id=(author if i % 2 else star).pk,
            data={"verb": "starred", "object_type": "project", "object_id": f"p{i}"},
        )
    activate(reader, author, star)
    key = make_token(reader, id_prefix=id_token)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    cold = client.get("/api/feed/", {"limit": 10})
    assert cold.status_code == 200 and len(cold.json()["items"]) == 10
    store.flush_buffered()
    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    def counting(self, command, *args, **kwargs):
        sent.append(command)
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    with django_assert_num_queries(0):
        warm = client.get("/api/feed/", {"limit": 10})
    assert warm.json() == cold.json()
    assert len(sent) == 1  # token, throttle, pull authors, read mark and the page: one script
    sent.clear()
    with django_assert_num_queries(0):
        second = client.get("/api/feed/", {"limit": 10, "cursor": warm.json()["next_cursor"]})
    assert len(sent) == 1 and len(second.json()["items"]) == 10
    assert {i["id"] for i in second.json()["items"]}.isdisjoint(
        i["id"] for i in warm.json()["items"]
    )
    # A pull-author list that is no longer current (an author crossed the threshold since):
    # Redis cannot name the sources, so the page is a second round trip, after the list is
    # read again from PostgreSQL.
    store.bump_pull_version()
    sent.clear()
    again = client.get("/api/feed/", {"limit": 10})
    assert again.json() == cold.json()
    assert len(sent) == 3  # prelude; the list cached again; the page


@pytest.mark.django_db
def test_forged_tokens_naming_a_user_do_not_spend_their_throttle():
    from rest_framework.test import APIClient

    from feeds.throttles import FeedReadThrottle
    from feedsite.api.auth import new_token_key
    from tests.conftest import make_token

    old = FeedReadThrottle.rate
    FeedReadThrottle.rate = "3/min"
    try:
        victim = UserFactory()
        key = make_token(victim)
        forger = APIClient()
        for _ in range(5):  # the victim's id, a made-up secret
            forger.credentials(HTTP_AUTHORIZATION=f"Token {new_token_key(victim.pk)}")
            assert forger.get("/api/feed/").status_code == 401
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        codes = [client.get("/api/feed/").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        browsable = client.get("/api/feed/", {"format": "json"})  # the DRF view: same bucket
        assert browsable.status_code == 429
    finally:
        FeedReadThrottle.rate = old


@pytest.mark.django_db
def test_forged_tokens_touch_nothing_of_the_user_they_name():
    from rest_framework.test import APIClient

    from feedsite.api.auth import new_token_key
    from tests.conftest import activate

    victim = UserFactory()
    activate(victim)
    store.client().expire(store.feed_key(victim.pk), 100)
    forger = APIClient()
    for _ in range(3):
        forger.credentials(HTTP_AUTHORIZATION=f"Token {new_token_key(victim.pk)}")
        assert forger.get("/api/feed/").status_code == 401
    assert 0 < store.client().ttl(store.feed_key(victim.pk)) <= 100  # no read mark


@pytest.mark.django_db
def test_pages_link_to_the_next_one_in_a_header_and_in_the_browsable_api():
    from urllib.parse import urlencode

    from activities.services import activity_publish
    from tests.conftest import activate

    author = UserFactory()
    for i in range(3):
        activity_publish(
            actor_id=author.pk, data={"verb": "v", "object_type": "t", "object_id": f"o{i}"}
        )
    activate(author)  # (no worker here: the feed is built from PostgreSQL)
    client = auth_client(author)
    for path in ("/api/feed/", f"/api/users/{author.pk}/activities/"):
        res = client.get(path, {"limit": 2})
        body = res.json()
        assert set(body) == {"items", "next_cursor"}  # the JSON body stays as it was
        link = res["Link"]
        cursor = urlencode({"cursor": body["next_cursor"]})
        assert link.endswith('rel="next"') and cursor in link
        nxt = client.get(link[1 : link.index(">")].removeprefix("http://testserver"))
        assert len(nxt.json()["items"]) == 1 and "Link" not in nxt  # the last page
        html = client.get(path, {"limit": 2}, HTTP_ACCEPT="text/html").content.decode()
        assert '<a href="http://testserver' in html and "cursor=" in html  # clickable
    assert 'rel="next"' in html  # the "Next page" button


@pytest.mark.django_db
def test_the_api_root_lists_the_resources(api):
    res = api.get("/api/", HTTP_ACCEPT="application/json")
    assert res.status_code == 200
    resources = res.json()["resources"]
    assert resources["feed"].endswith("/api/feed/") and resources["docs"].endswith("/api/docs/")
    for name, path in {
        "activities": "/api/activities/",
        "notifications": "/api/notifications/",
        "me": "/api/me/",
        "notification-settings": "/api/me/notification-settings/",
    }.items():
        assert resources[name].endswith(path), name
    users = res.json()["user_resources"]
    assert users["followers"].endswith("/api/users/{user_id}/followers/")
    assert users["block"].endswith("/api/users/{user_id}/block/")
    # Every listed URL answers (a signed-in browser would see each of them).
    from tests.conftest import auth_client
    from tests.factories import UserFactory

    client = auth_client(UserFactory())
    for name, url in resources.items():
        if name in {
            "register",
            "token",
            "logout",
            "logout-all",
            "notifications-seen",
            "notifications-read",
            "activities",
        }:
            continue  # POST only
        got = client.get(url.removeprefix("http://testserver"))
        assert got.status_code == 200, (name, got.status_code)
    html = api.get("/api/", HTTP_ACCEPT="text/html")
    assert html.status_code == 200 and b"Api Root" in html.content


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_the_docs_load_their_assets_from_the_project_not_a_cdn(api, path):
    html = api.get(path).content.decode()
    assert "/static/drf_spectacular_sidecar/" in html
    assert "cdn" not in html.lower() and "https://" not in html
