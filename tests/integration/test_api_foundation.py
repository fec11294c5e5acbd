"""The write API on the real database and Redis: every endpoint's success and failure cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from activities.models import Activity
from feeds.models import FanoutJob
from follows.models import Follow
from tests.conftest import auth_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

USER_KEYS = {"id", "username", "followers_count", "following_count", "is_celebrity"}
ACTIVITY_KEYS = {
    "id",
    "actor",
    "verb",
    "object_type",
    "object_id",
    "object_title",
    "target_type",
    "target_id",
    "target_title",
    "metadata",
    "time",
    "edited_at",  # null until edited (issue 25)
    "foreign_id",
}
STAR = {
    "verb": "starred",
    "object_type": "project",
    "object_id": "p-1",
    "object_title": "project-x",
}


# --- auth ------------------------------------------------------------------------------------


def test_register_then_token_then_authenticated_call(api: APIClient):
    res = api.post(
        "/api/auth/register/", {"username": "ana", "password": "a-long-passphrase-7"}, format="json"
    )
    assert res.status_code == 201, res.json()
    assert set(res.json()) == {"id", "username"} and res.json()["username"] == "ana"
    res = api.post(
        "/api/auth/token/", {"username": "ana", "password": "a-long-passphrase-7"}, format="json"
    )
    assert res.status_code == 200
    api.credentials(HTTP_AUTHORIZATION=f"Token {res.json()['token']}")
    me = api.get("/api/users/999999/")
    assert me.status_code == 404  # authenticated: a missing user is 404, not 401


def test_register_rejects_taken_weak_and_privileged(api: APIClient):
    UserFactory(username="taken")
    res = api.post(
        "/api/auth/register/",
        {"username": "taken", "password": "a-long-passphrase-7"},
        format="json",
    )
    assert res.status_code == 400 and "username" in res.json()
    res = api.post("/api/auth/register/", {"username": "bo", "password": "123"}, format="json")
    assert res.status_code == 400 and "password" in str(res.json()).lower()
    res = api.post(
        "/api/auth/register/",
        {
            "username": "eve",
            "password": "a-long-passphrase-7",
            "is_staff": True,
            "is_superuser": True,
        },
        format="json",
    )
    assert res.status_code == 201
    from django.contrib.auth import get_user_model

    eve = get_user_model().objects.get(username="eve")
    assert not eve.is_staff and not eve.is_superuser


def test_token_with_wrong_password_is_400(api: APIClient):
    UserFactory(username="cy")
    res = api.post("/api/auth/token/", {"username": "cy", "password": "nope"}, format="json")
    assert res.status_code == 400
    assert "unable to log in" in res.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/users/1/"),
        ("post", "/api/users/1/follow/"),
        ("delete", "/api/users/1/follow/"),
        ("get", "/api/users/1/followers/"),
        ("get", "/api/users/1/following/"),
        ("get", "/api/users/1/activities/"),
        ("post", "/api/activities/"),
        ("get", "/api/activities/1/"),
        ("delete", "/api/activities/1/"),
        ("get", "/api/activities/1/fanout/"),
    ],
)
def test_every_private_endpoint_is_401_without_or_with_a_bad_token(api: APIClient, method, path):
    assert getattr(api, method)(path).status_code == 401
    api.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")
    assert getattr(api, method)(path).status_code == 401


# --- users and follows ------------------------------------------------------------------------


def test_user_detail_has_exactly_the_public_fields():
    ana, bo = UserFactory(), UserFactory()
    res = auth_client(ana).get(f"/api/users/{bo.pk}/")
    assert res.status_code == 200
    assert set(res.json()) == USER_KEYS
    assert res.json() == {
        "id": bo.pk,
        "username": bo.username,
        "followers_count": 0,
        "following_count": 0,
        "is_celebrity": False,
    }


def test_follow_is_201_then_200_and_counts_move():
    ana, bo = UserFactory(), UserFactory()
    client = auth_client(ana)
    first = client.post(f"/api/users/{bo.pk}/follow/")
    assert first.status_code == 201 and first.json()["followers_count"] == 1
    again = client.post(f"/api/users/{bo.pk}/follow/")
    assert again.status_code == 200 and again.json()["followers_count"] == 1
    assert Follow.objects.filter(follower=ana, followee=bo).count() == 1
    assert client.get(f"/api/users/{ana.pk}/").json()["following_count"] == 1


def test_follow_self_unknown_and_unfollow():
    ana, bo = UserFactory(), UserFactory()
    client = auth_client(ana)
    res = client.post(f"/api/users/{ana.pk}/follow/")
    assert res.status_code == 400 and "yourself" in res.json()["detail"]
    assert client.post("/api/users/999999/follow/").status_code == 404
    client.post(f"/api/users/{bo.pk}/follow/")
    assert client.delete(f"/api/users/{bo.pk}/follow/").status_code == 204
    assert (
        client.delete(f"/api/users/{bo.pk}/follow/").status_code == 204
    )  # not following: still 204
    bo_json = client.get(f"/api/users/{bo.pk}/").json()
    assert bo_json["followers_count"] == 0


def test_followers_and_following_lists_page_with_a_cursor():
    star = UserFactory()
    fans = [UserFactory() for _ in range(5)]
    for fan in fans:
        auth_client(fan).post(f"/api/users/{star.pk}/follow/")
    client = auth_client(fans[0])
    seen, cursor = [], None
    while True:
        res = client.get(
            f"/api/users/{star.pk}/followers/",
            {"limit": 2, **({"cursor": cursor} if cursor else {})},
        )
        assert res.status_code == 200
        assert all(set(u) == USER_KEYS for u in res.json()["items"])
        seen += [u["id"] for u in res.json()["items"]]
        cursor = res.json()["next_cursor"]
        if not cursor:
            break
    assert seen == [f.pk for f in reversed(fans)]  # newest follow first, each once
    following = client.get(f"/api/users/{fans[0].pk}/following/").json()
    assert [u["id"] for u in following["items"]] == [star.pk]
    assert following["items"][0]["followers_count"] == 5


# --- activities -------------------------------------------------------------------------------


def test_publish_returns_the_activity_with_the_caller_as_actor():
    ana, bo = UserFactory(), UserFactory()
    body = {
        **STAR,
        "metadata": {"stars": 3},
        "actor": bo.pk,
        "id": 1,
        "created_at": "2001-01-01T00:00:00Z",
        "unknown": "ignored",
        "target_type": "org",
        "target_id": "o-1",
    }
    res = auth_client(ana).post("/api/activities/", body, format="json")
    assert res.status_code == 201, res.json()
    data = res.json()
    assert set(data) == ACTIVITY_KEYS and data["edited_at"] is None
    assert data["actor"] == {"id": ana.pk, "username": ana.username}
    assert data["id"] != "1" and data["metadata"] == {"stars": 3}
    activity = Activity.objects.get(id=int(data["id"]))
    assert activity.actor_id == ana.pk
    # The fan-out job is written in the same transaction as the activity.
    assert FanoutJob.objects.filter(activity_id=activity.id, state="pending").count() == 1


def test_same_foreign_id_returns_200_and_creates_nothing():
    ana = UserFactory()
    client = auth_client(ana)
    first = client.post("/api/activities/", {**STAR, "foreign_id": "ext-1"}, format="json")
    second = client.post(
        "/api/activities/", {**STAR, "foreign_id": "ext-1", "object_id": "other"}, format="json"
    )
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"] and second.json()["object_id"] == "p-1"
    assert Activity.objects.count() == 1 and FanoutJob.objects.count() == 1
    # Another actor may use the same foreign id.
    assert (
        auth_client(UserFactory())
        .post("/api/activities/", {**STAR, "foreign_id": "ext-1"}, format="json")
        .status_code
        == 201
    )


def test_backdated_time_is_kept_and_orders_the_id():
    client = auth_client(UserFactory())
    old = client.post(
        "/api/activities/", {**STAR, "time": "2021-05-01T12:00:00.123456Z"}, format="json"
    ).json()
    new = client.post("/api/activities/", STAR, format="json").json()
    assert old["time"] == "2021-05-01T12:00:00.123Z"  # stored at millisecond precision
    assert int(old["id"]) < int(new["id"]) < 2**53


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({**STAR, "verb": "Starred It"}, "verb", "slug"),
        ({**STAR, "verb": "x" * 33}, "verb", "32"),
        ({k: v for k, v in STAR.items() if k != "object_id"}, "object_id", "required"),
        ({**STAR, "metadata": ["not", "an", "object"]}, "metadata", "dictionary"),
        ({**STAR, "metadata": {"blob": "x" * 5000}}, "metadata", "4096"),
        ({**STAR, "time": "yesterday"}, "time", "format"),
        ({**STAR, "time": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, "time", "future"),
        ({**STAR, "time": "1999-12-31T23:59:59Z"}, "time", "2000"),
        ({**STAR, "foreign_id": ""}, "foreign_id", "blank"),
        ({**STAR, "target_type": "org"}, "target_id", "together"),
    ],
)
def test_bad_activity_input_is_400_with_a_message_per_field(body, field, needle):
    res = auth_client(UserFactory()).post("/api/activities/", body, format="json")
    assert res.status_code == 400, res.content
    assert field in res.json(), res.json()
    assert needle in str(res.json()[field]).lower() or needle in str(res.json()).lower()
    assert Activity.objects.count() == 0 and FanoutJob.objects.count() == 0


def test_malformed_json_and_oversized_body_are_400():
    client = auth_client(UserFactory())
    res = client.post("/api/activities/", data="{not json", content_type="application/json")
    assert res.status_code == 400 and "JSON parse error" in res.json()["detail"]
    huge = {**STAR, "object_title": "x" * 70_000}
    assert client.post("/api/activities/", huge, format="json").status_code in (400, 413)


def test_get_and_delete_activity_with_ownership():
    ana, bo = UserFactory(), UserFactory()
    created = auth_client(ana).post("/api/activities/", STAR, format="json").json()
    path = f"/api/activities/{created['id']}/"
    assert auth_client(bo).get(path).json() == created
    res = auth_client(bo).delete(path)
    assert res.status_code == 403 and "actor" in res.json()["detail"]
    assert auth_client(bo).get(f"{path}fanout/").status_code == 403
    assert auth_client(ana).get(f"{path}fanout/").json()["state"] == "pending"
    assert auth_client(ana).delete(path).status_code == 204
    assert auth_client(ana).get(path).status_code == 404
    assert auth_client(ana).get("/api/activities/not-a-number/").status_code == 404
    assert auth_client(ana).get(f"/api/activities/{2**80}/").status_code == 400  # beyond a bigint


def test_staff_may_delete_anyones_activity():
    ana, boss = UserFactory(), UserFactory(is_staff=True)
    created = auth_client(ana).post("/api/activities/", STAR, format="json").json()
    assert auth_client(boss).delete(f"/api/activities/{created['id']}/").status_code == 204
    assert not Activity.objects.exists()


def test_user_activities_page_newest_first_and_reject_bad_params():
    ana = UserFactory()
    client = auth_client(ana)
    ids = [
        client.post("/api/activities/", {**STAR, "object_id": f"p{i}"}, format="json").json()["id"]
        for i in range(5)
    ]
    got, cursor = [], None
    while True:
        res = client.get(
            f"/api/users/{ana.pk}/activities/",
            {"limit": 2, **({"cursor": cursor} if cursor else {})},
        )
        got += [a["id"] for a in res.json()["items"]]
        cursor = res.json()["next_cursor"]
        if not cursor:
            break
    assert got == list(reversed(ids))
    for bad in ({"limit": 0}, {"limit": 101}, {"limit": "ten"}):
        res = client.get(f"/api/users/{ana.pk}/activities/", bad)
        assert res.status_code == 400 and "limit" in res.json()
    good = client.get(f"/api/users/{ana.pk}/activities/", {"limit": 1}).json()["next_cursor"]
    for cursor in ("garbage", good[:-3], good.split(".")[0] + ".AAAAAAAAAAAAAAAAAAAAAA"):
        res = client.get(f"/api/users/{ana.pk}/activities/", {"cursor": cursor})
        assert res.status_code == 400 and "cursor" in res.json()


def test_healthz_reports_each_part(api: APIClient):
    res = api.get("/healthz")
    assert res.status_code == 200
    assert res.json() == {"database": "ok", "redis": "ok", "broker": "ok"}


def test_openapi_schema_and_docs_are_served(api: APIClient):
    assert api.get("/api/schema/").status_code == 200
    assert api.get("/api/docs/").status_code == 200


def test_a_deleted_token_or_deactivated_user_stops_at_once_despite_the_auth_cache():
    from knox.models import AuthToken

    ana = UserFactory()
    client = auth_client(ana)
    assert client.get(f"/api/users/{ana.pk}/").status_code == 200  # now cached
    assert client.get(f"/api/users/{ana.pk}/").status_code == 200
    AuthToken.objects.filter(user=ana).delete()
    assert client.get(f"/api/users/{ana.pk}/").status_code == 401
    bo = UserFactory()
    client = auth_client(bo)
    assert client.get(f"/api/users/{bo.pk}/").status_code == 200
    bo.is_active = False
    bo.save()
    assert client.get(f"/api/users/{bo.pk}/").status_code == 401
