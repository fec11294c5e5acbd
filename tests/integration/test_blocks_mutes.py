"""Blocks and mutes on the real stack: the endpoints, follows refused and removed, feeds hidden
across push and pull authors, exact paging when a mute lands between two pages."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from feeds.services import feed_settings_update
from follows.models import Block, Follow, Mute, UserStats
from follows.services import follow_create
from tests.conftest import auth_client
from tests.factories import UserFactory
from tests.integration.test_feed_read import all_ids, post, read_all


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["block", "mute"])
def test_block_and_mute_endpoints(kind):
    me, other, third = UserFactory(), UserFactory(), UserFactory()
    client = auth_client(me)
    first = client.post(f"/api/users/{other.pk}/{kind}/")
    assert first.status_code == 201, first.content
    assert first.json()["id"] == other.pk and first.json()["username"] == other.username
    again = client.post(f"/api/users/{other.pk}/{kind}/")
    assert again.status_code == 200 and again.json() == first.json()
    assert client.post(f"/api/users/{me.pk}/{kind}/").status_code == 400
    assert "yourself" in client.post(f"/api/users/{me.pk}/{kind}/").json()["detail"]
    assert client.post(f"/api/users/999999999/{kind}/").status_code == 404
    assert client.post(f"/api/users/{third.pk}/{kind}/").status_code == 201
    # The list, newest first, paged.
    page = client.get(f"/api/me/{kind}s/", {"limit": 1})
    assert page.status_code == 200
    assert [i["id"] for i in page.json()["items"]] == [third.pk]
    assert set(page.json()["items"][0]) == {"id", "username", "created_at"}
    rest = client.get(f"/api/me/{kind}s/", {"limit": 1, "cursor": page.json()["next_cursor"]})
    assert [i["id"] for i in rest.json()["items"]] == [other.pk]
    assert rest.json()["next_cursor"] is None
    # Removing: 204, also when there is nothing to remove.
    assert client.delete(f"/api/users/{other.pk}/{kind}/").status_code == 204
    assert client.delete(f"/api/users/{other.pk}/{kind}/").status_code == 204
    assert [i["id"] for i in client.get(f"/api/me/{kind}s/").json()["items"]] == [third.pk]
    # Anonymous callers: 401.
    assert APIClient().post(f"/api/users/{other.pk}/{kind}/").status_code == 401
    assert APIClient().get(f"/api/me/{kind}s/").status_code == 401


@pytest.mark.django_db
def test_a_block_removes_follows_both_ways_and_refuses_new_ones():
    a, b = UserFactory(), UserFactory()
    follow_create(follower_id=a.pk, followee_id=b.pk)
    follow_create(follower_id=b.pk, followee_id=a.pk)
    assert auth_client(a).post(f"/api/users/{b.pk}/block/").status_code == 201
    assert not Follow.objects.filter(follower__in=(a, b)).exists()
    stats = {s.user_id: s for s in UserStats.objects.filter(user__in=(a, b))}
    assert stats[a.pk].followers_count == stats[a.pk].following_count == 0
    assert stats[b.pk].followers_count == stats[b.pk].following_count == 0
    refused = auth_client(b).post(f"/api/users/{a.pk}/follow/")
    assert refused.status_code == 403 and "blocked you" in refused.json()["detail"]
    refused = auth_client(a).post(f"/api/users/{b.pk}/follow/")
    assert refused.status_code == 403 and "unblock" in refused.json()["detail"]
    # Unblocking allows following again; the removed follows do not come back by themselves.
    assert auth_client(a).delete(f"/api/users/{b.pk}/block/").status_code == 204
    assert not Follow.objects.exists()
    assert auth_client(b).post(f"/api/users/{a.pk}/follow/").status_code == 201


@pytest.mark.django_db
def test_the_blocked_user_gets_403_on_the_blockers_activities_and_profiles_stay_public():
    blocker, blocked, bystander = UserFactory(), UserFactory(), UserFactory()
    res = auth_client(blocker).post(
        "/api/activities/", {"verb": "posted", "object_type": "note", "object_id": "n1"}
    )
    aid = res.json()["id"]
    Block.objects.create(blocker=blocker, blocked=blocked)
    them = auth_client(blocked)
    assert them.get(f"/api/activities/{aid}/").status_code == 403
    assert them.get(f"/api/activities/{aid}/").json()["detail"] == "this user has blocked you"
    assert them.get(f"/api/users/{blocker.pk}/activities/").status_code == 403
    assert them.get(f"/api/users/{blocker.pk}/").status_code == 200
    others = auth_client(bystander)
    assert others.get(f"/api/activities/{aid}/").status_code == 200
    assert others.get(f"/api/users/{blocker.pk}/activities/").status_code == 200
    # The blocker still sees the blocked user's activities list (a block hides one way here).
    assert auth_client(blocker).get(f"/api/users/{blocked.pk}/activities/").status_code == 200


@pytest.mark.worker
@pytest.mark.parametrize("celebrity", [False, True], ids=["push", "pull"])
def test_block_hides_both_ways_and_mute_hides_at_read_time(live_worker, celebrity):
    if celebrity:
        feed_settings_update(celebrity_threshold=1)  # every author with a follower is pulled
    reader, author = UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    follow_create(follower_id=author.pk, followee_id=reader.pk)
    theirs = [post(author, object_id=f"a{i}") for i in range(2)]
    mine = [post(reader, object_id="r0")]
    assert set(all_ids(read_all(reader))) == set(theirs + mine)
    # A mute hides the author from the reader (not the other way), and keeps the follow.
    assert auth_client(reader).post(f"/api/users/{author.pk}/mute/").status_code == 201
    assert set(all_ids(read_all(reader))) == set(mine)
    assert set(all_ids(read_all(author))) == set(theirs + mine)
    assert Follow.objects.filter(follower=reader, followee=author).exists()
    assert auth_client(reader).delete(f"/api/users/{author.pk}/mute/").status_code == 204
    assert set(all_ids(read_all(reader))) == set(theirs + mine)
    # A block hides both ways, whichever side blocked.
    assert auth_client(author).post(f"/api/users/{reader.pk}/block/").status_code == 201
    assert set(all_ids(read_all(reader))) == set(mine)
    assert set(all_ids(read_all(author))) == set(theirs)
    # New activities of either side reach neither (fan-out has no follow left to use).
    later = post(author, object_id="a-later")
    assert later not in all_ids(read_all(reader))


@pytest.mark.worker
def test_paging_stays_exact_when_a_mute_lands_between_two_pages(live_worker):
    feed_settings_update(aggregation_window_seconds=1)
    reader, loud, quiet = UserFactory(), UserFactory(), UserFactory()
    for author in (loud, quiet):
        follow_create(follower_id=reader.pk, followee_id=author.pk)
    ids = {}
    for i in range(6):
        for author in (loud, quiet):
            ids[post(author, object_id=f"{author.pk}-{i}")] = author.pk
    client = auth_client(reader)
    first = client.get("/api/feed/", {"limit": 5}).json()
    Mute.objects.create(muter=reader, muted=loud)  # as the admin would; the receiver refreshes
    seen, cursor = all_ids(first["items"]), first["next_cursor"]
    while cursor:
        page = client.get("/api/feed/", {"limit": 5, "cursor": cursor}).json()
        seen += all_ids(page["items"])
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen))  # nothing twice
    quiet_ids = {a for a, who in ids.items() if who == quiet.pk}
    assert quiet_ids <= set(seen)  # nothing of the unmuted author skipped
    later = set(seen) - set(all_ids(first["items"]))
    assert all(ids[a] == quiet.pk for a in later)  # the muted author is gone from then on
