"""The notification feed on the real stack: notify on publish and on follow, delivered by the real
worker, grouped and paged, seen/read and the counts, online over SSE, offline by email (instant
and digest, never twice, none lost while the mail server is down), blocks and mutes."""

from __future__ import annotations

import json

import pytest
from django.core import mail
from django.test import override_settings
from rest_framework.test import APIClient

from activities.models import Activity
from feeds import notifications
from feeds.models import FanoutJob, Notification, NotificationEmail, NotificationSettings
from follows.models import Block, Mute
from follows.services import follow_create, follow_delete
from tests.conftest import WORKER_MAIL_DIR, auth_client, wait_until
from tests.factories import UserFactory
from tests.integration.test_stream import Stream

STAR = {"verb": "starred", "object_type": "project", "object_id": "x"}


def publish(user, notify, **extra) -> dict:
    res = auth_client(user).post(
        "/api/activities/", {**STAR, **extra, "notify": notify}, format="json"
    )
    assert res.status_code == 201, res.content
    return res.json()


def jobs_done() -> None:
    wait_until(lambda: not FanoutJob.objects.exclude(state="done").exists())


def page(user, **params) -> dict:
    res = auth_client(user).get("/api/notifications/", params)
    assert res.status_code == 200, res.content
    return res.json()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "notify, problem",
    [
        (list(range(1, 102)), "no more than 100"),
        (["a"], "valid integer"),
        ([1.5], "valid integer"),
        ([True], "valid integer"),
        ("1,2", "list"),
        ({"id": 1}, "list"),
    ],
)
def test_notify_must_be_a_list_of_at_most_100_integers(notify, problem):
    res = auth_client(UserFactory()).post(
        "/api/activities/", {**STAR, "notify": notify}, format="json"
    )
    assert res.status_code == 400, res.content
    assert problem in json.dumps(res.json()).lower()
    assert not Activity.objects.exists()


@pytest.mark.worker
def test_notify_reaches_named_users_except_unknown_self_and_blocks(live_worker):
    actor, fan, blocker, blocked, stranger = (UserFactory() for _ in range(5))
    Block.objects.create(blocker=blocker, blocked=actor)
    Block.objects.create(blocker=actor, blocked=blocked)
    ids = [fan.pk, blocker.pk, blocked.pk, actor.pk, 999_999_999]
    act = publish(actor, ids)
    jobs_done()
    assert set(Notification.objects.values_list("recipient_id", flat=True)) == {fan.pk}
    items = page(fan)["items"]
    assert [i["id"] for i in items] == [act["id"]]
    assert items[0]["seen"] is False and items[0]["read"] is False
    for other in (blocker, blocked, stranger, actor):
        assert page(other)["items"] == []
    # The activity itself does not show who was notified.
    assert "notify" not in auth_client(stranger).get(f"/api/activities/{act['id']}/").json()


@pytest.mark.worker
def test_follows_notify_grouped_and_not_twice_within_the_window(live_worker):
    star, ana, bo = UserFactory(), UserFactory(), UserFactory()
    assert page(star)["items"] == []  # built (empty) before the follows: delivery writes to it
    follow_create(follower_id=ana.pk, followee_id=star.pk)
    follow_create(follower_id=bo.pk, followee_id=star.pk)
    jobs_done()
    body = page(star)
    assert len(body["items"]) == 1
    item = body["items"][0]
    assert item["verb"] == "followed" and item["object_id"] == str(star.pk)
    assert item["actor_count"] == 2 and {a["id"] for a in item["actors"]} == {ana.pk, bo.pk}
    assert body["unseen"] == body["unread"] == 2
    # Unfollow and follow again inside the window: nothing new.
    follow_delete(follower_id=ana.pk, followee_id=star.pk)
    follow_create(follower_id=ana.pk, followee_id=star.pk)
    jobs_done()
    assert page(star)["unread"] == 2
    # A follow's notification goes to no home feed.
    auth_client(bo).get("/api/feed/")
    assert all(i["verb"] != "followed" for i in auth_client(bo).get("/api/feed/").json()["items"])


@pytest.mark.worker
def test_seen_read_and_counts(live_worker):
    me, ana, bo = UserFactory(), UserFactory(), UserFactory()
    page(me)
    first = publish(ana, [me.pk], object_id="a")
    publish(bo, [me.pk], object_id="b")
    publish(ana, [me.pk], object_id="b")  # groups with bo's: same verb and object
    jobs_done()
    client = auth_client(me)
    assert client.get("/api/notifications/counts/").json() == {"unseen": 3, "unread": 3}
    assert client.post("/api/notifications/seen/").json() == {"unseen": 0, "unread": 3}
    items = page(me)["items"]
    assert [len(i["activity_ids"]) for i in items] == [2, 1]
    assert all(i["seen"] and not i["read"] for i in items)
    res = client.post("/api/notifications/read/", {"ids": [items[0]["id"], "123"]}, format="json")
    assert res.status_code == 200 and res.json() == {"unseen": 0, "unread": 1}
    items = page(me)["items"]
    assert [i["read"] for i in items] == [True, False]
    # A new one is unseen again; read implies seen.
    latest = publish(bo, [me.pk], object_id="c")
    jobs_done()
    assert client.get("/api/notifications/counts/").json() == {"unseen": 1, "unread": 2}
    res = client.post("/api/notifications/read/", {"ids": [latest["id"]]}, format="json")
    assert res.json() == {"unseen": 0, "unread": 1}
    assert client.post("/api/notifications/read/", {"all": True}, format="json").json() == {
        "unseen": 0,
        "unread": 0,
    }
    bad_bodies = ({}, {"all": False}, {"ids": "1"}, {"ids": [1.5]}, {"ids": ["²"]}, [])
    for bad in (*bad_bodies, {"ids": [], "all": True}):
        res = client.post("/api/notifications/read/", bad, format="json")
        assert res.status_code == 400, (bad, res.content)
    # The state is PostgreSQL's too: a lost Redis rebuilds it exactly.
    from feeds import store

    store.notifications_forget(me.pk)
    assert client.get("/api/notifications/counts/").json() == {"unseen": 0, "unread": 0}
    assert [i["read"] for i in page(me)["items"]] == [True, True, True]
    # Deleting an activity takes it out of notification feeds.
    assert auth_client(ana).delete(f"/api/activities/{first['id']}/").status_code == 204
    jobs_done()
    assert first["id"] not in [a for i in page(me)["items"] for a in i["activity_ids"]]


@pytest.mark.worker
def test_paging_of_notifications_is_exact(live_worker):
    me, author = UserFactory(), UserFactory()
    page(me)
    ids = [publish(author, [me.pk], object_id=f"o{i}")["id"] for i in range(7)]
    jobs_done()
    seen, cursor = [], None
    while True:
        body = page(me, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [a for i in body["items"] for a in i["activity_ids"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    # A home-feed cursor is not a notifications cursor.
    feed_cursor = auth_client(me).get("/api/feed/", {"limit": 1}).json()["next_cursor"]
    if feed_cursor:
        assert (
            auth_client(me).get("/api/notifications/", {"cursor": feed_cursor}).status_code == 400
        )


@pytest.mark.worker
def test_mutes_and_blocks_keep_counts_true_on_feeds_built_later(live_worker):
    me, loud, rude = UserFactory(), UserFactory(), UserFactory()
    Mute.objects.create(muter=me, muted=loud)
    publish(loud, [me.pk])  # delivered before me's feed is built
    publish(rude, [me.pk])
    jobs_done()
    body = page(me)  # built from PostgreSQL now
    assert [i["actor"]["id"] for i in body["items"]] == [rude.pk] and body["unread"] == 1
    Block.objects.create(blocker=me, blocked=rude)  # after delivery: stops counting too
    assert auth_client(me).get("/api/notifications/counts/").json()["unread"] == 0
    assert page(me)["items"] == []


@pytest.mark.worker
def test_a_mute_hides_notifications_and_does_not_count_them(live_worker):
    me, loud = UserFactory(), UserFactory()
    page(me)
    Mute.objects.create(muter=me, muted=loud)
    publish(loud, [me.pk])
    jobs_done()
    body = page(me)
    assert body["items"] == [] and body["unread"] == 0
    Mute.objects.filter(muter=me).delete()
    assert len(page(me)["items"]) == 1  # shown again once unmuted


@pytest.mark.worker
def test_an_online_user_hears_a_notification_on_the_stream(live_worker, served):
    me, ana = UserFactory(email="me@example.com"), UserFactory()
    NotificationSettings.objects.create(user=me, email="instant")  # would email if offline
    stream = Stream(served, me)
    try:
        act = publish(ana, [me.pk])
        line = stream.wait_for(lambda s: s == "event: notification", timeout=5)
        data = stream.wait_for(lambda s: s.startswith("data:"), timeout=2)
        item = json.loads(data[len("data:") :])
        assert line and item["id"] == act["id"] and item["read"] is False
    finally:
        stream.stop.set()
    jobs_done()
    assert not NotificationEmail.objects.filter(recipient=me).exists()  # online: no email


@pytest.mark.worker
def test_an_offline_user_gets_one_instant_email_per_notification(live_worker):
    me, ana = UserFactory(email="me@example.com"), UserFactory()
    auth_client(me).put(
        "/api/me/notification-settings/", {"email": "instant", "digest_minutes": 60}
    )
    before = set(WORKER_MAIL_DIR.glob("*")) if WORKER_MAIL_DIR.exists() else set()
    publish(ana, [me.pk], object_id="one")
    publish(ana, [me.pk], object_id="two")
    jobs_done()
    wait_until(
        lambda: NotificationEmail.objects.filter(recipient=me, state="sent").count() == 2,
        timeout=30,
    )
    sent = [p.read_text() for p in set(WORKER_MAIL_DIR.glob("*")) - before]
    mails = [m for text in sent for m in text.split("-" * 79) if "me@example.com" in m]
    assert len(mails) == 2
    assert any("starred project one" in m for m in mails)


@pytest.mark.django_db
def test_digests_send_each_notification_once_and_retry_while_the_mail_server_is_down():
    me, ana = UserFactory(email="me@example.com"), UserFactory()
    NotificationSettings.objects.create(user=me, email="digest", digest_minutes=5)
    acts = [
        Activity.objects.create(actor=ana, verb="starred", object_type="p", object_id=str(i))
        for i in range(3)
    ]
    for act in acts[:2]:
        notifications.outbox_add(activity_id=act.id, user_ids=[me.pk])
    down = override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend", EMAIL_PORT=1, EMAIL_TIMEOUT=1
    )
    with down, pytest.raises(OSError):
        for row_ids in notifications.emails_due():
            notifications.email_send(row_ids=row_ids)
    assert NotificationEmail.objects.filter(state="pending").count() == 2  # kept, not lost
    for row_ids in notifications.emails_due():
        notifications.email_send(row_ids=row_ids)
    assert len(mail.outbox) == 1 and "2 new notifications" in mail.outbox[0].subject
    # Nothing twice; a new one waits for the next period.
    notifications.outbox_add(activity_id=acts[2].id, user_ids=[me.pk])
    notifications.outbox_add(activity_id=acts[0].id, user_ids=[me.pk])  # a redelivery
    assert notifications.emails_due() == []
    from datetime import timedelta

    from django.utils import timezone

    later = timezone.now() + timedelta(minutes=6)
    for row_ids in notifications.emails_due(now=later):
        notifications.email_send(row_ids=row_ids, now=later)
    # A second sweep of the same period (overlapping the first) sends nothing more.
    notifications.outbox_add(activity_id=acts[1].id, user_ids=[me.pk])
    assert (
        notifications.email_send(
            row_ids=list(NotificationEmail.objects.values_list("id", flat=True)), now=later
        )
        == 0
    )
    assert len(mail.outbox) == 2 and "0 new" not in mail.outbox[1].subject
    assert NotificationEmail.objects.filter(state="sent").count() == 3


@pytest.mark.django_db
def test_notification_settings_me_and_registration_with_email():
    res = APIClient().post(
        "/api/auth/register/",
        {"username": "ana", "password": "pw-correct-horse-9", "email": "ana@example.com"},
    )
    assert res.status_code == 201
    from django.contrib.auth import get_user_model

    ana = get_user_model().objects.get(username="ana")
    client = auth_client(ana)
    me = client.get("/api/me/").json()
    assert me["id"] == ana.pk and me["email"] == "ana@example.com" and "followers_count" in me
    assert APIClient().get("/api/me/").status_code == 401
    url = "/api/me/notification-settings/"
    assert client.get(url).json() == {"email": "digest", "digest_minutes": 60}
    put = client.put(url, {"email": "instant", "digest_minutes": 30}, format="json")
    assert put.status_code == 200 and put.json() == {"email": "instant", "digest_minutes": 30}
    assert client.put(url, {"email": "off"}, format="json").status_code == 400  # PUT: whole
    patch = client.patch(url, {"digest_minutes": 1440}, format="json")
    assert patch.json() == {"email": "instant", "digest_minutes": 1440}
    for bad in ({"email": "weekly"}, {"digest_minutes": 4}, {"digest_minutes": 1441}):
        assert client.patch(url, bad, format="json").status_code == 400, bad
    assert client.get(url).json() == {"email": "instant", "digest_minutes": 1440}


@pytest.mark.worker
def test_verify_feeds_checks_and_repairs_notification_feeds(live_worker):
    import io

    from django.core.management import call_command

    from feeds import store
    from tests.conftest import verify_feeds_clean

    me, ana = UserFactory(), UserFactory()
    page(me)
    act = publish(ana, [me.pk])
    jobs_done()
    assert "notification_feeds=1 wrong=0" in verify_feeds_clean("--user", str(me.pk))
    store.notifications_remove([me.pk], [int(act["id"])])  # lost from Redis
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("verify_feeds", "--user", str(me.pk), stdout=out)
    assert "feed=notifications missing=1" in out.getvalue()
    call_command("verify_feeds", "--user", str(me.pk), "--repair", stdout=io.StringIO())
    verify_feeds_clean("--user", str(me.pk))
    assert page(me)["unread"] == 1


@pytest.mark.django_db
def test_ids_that_name_no_user_are_ignored():
    actor = UserFactory()
    res = auth_client(actor).post(
        "/api/activities/", {**STAR, "notify": [0, -5, 999_999_999, actor.pk]}, format="json"
    )
    assert res.status_code == 201
    assert not Notification.objects.exists()
    assert not FanoutJob.objects.filter(kind="notify").exists()
