"""Notifications past the cap (issue 25 point 2): once a page reaches the oldest entry of the
user's Redis notification feed (capped at notification_max_length, set small in the admin's
feed settings), the pages go on in the Notification rows, with their seen/read flags; every
notification once, newest first, groups whole across the boundary; read by deep ids and read
all mark the rows; the counts keep their rules. On the real stack: PostgreSQL, Redis and a real
Celery worker delivering the notifications."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from feeds import notifications, store
from feeds.models import FeedSettings, Notification
from feedsite.api.cursor import feed_cursor_decode
from follows.services import block_create, mute_create
from tests.conftest import auth_client
from tests.factories import UserFactory
from tests.integration.test_notifications import jobs_done

CAP = 5
LIMITS = (1, 2, 3, 4, 5, 6, 7, 16)  # page boundaries on both sides of the cache boundary


def admin_settings(**changes: int) -> None:
    """Change the feed settings as an operator does: the admin's change form."""
    admin = get_user_model().objects.filter(username="ops").first() or UserFactory(
        username="ops", is_staff=True, is_superuser=True
    )
    client = Client()
    client.force_login(admin)
    row, _ = FeedSettings.objects.get_or_create(pk=1)
    form = {f.name: getattr(row, f.name) for f in FeedSettings._meta.fields if f.name != "id"}
    res = client.post(f"/admin/feeds/feedsettings/{row.pk}/change/", {**form, **changes})
    assert res.status_code == 302, res.content.decode()[:2000]
    row.refresh_from_db()
    assert all(getattr(row, k) == v for k, v in changes.items())


class Notifier:
    """An author who names users to notify, through the API."""

    def __init__(self, user) -> None:
        self.user = user
        self.client = auth_client(user)

    def notify(self, *users, object_id: str, verb: str = "starred") -> int:
        body = {"verb": verb, "object_type": "project", "object_id": object_id}
        res = self.client.post(
            "/api/activities/", {**body, "notify": [u.pk for u in users]}, format="json"
        )
        assert res.status_code == 201, res.content
        return int(res.json()["id"])


def page_through(client, limit: int) -> list[dict]:
    """Every item of the caller's notification feed, page by page; checks the pages' shape."""
    items: list[dict] = []
    cursor = None
    for _ in range(500):
        res = client.get(
            "/api/notifications/", {"limit": limit, **({"cursor": cursor} if cursor else {})}
        )
        assert res.status_code == 200, res.content
        body = res.json()
        assert len(body["items"]) <= limit
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert body["items"], "a page with a next cursor is never empty"
    raise AssertionError("the pages never ended")


def members(items: list[dict]) -> list[int]:
    return [int(a) for item in items for a in item["activity_ids"]]


def redis_ids(user) -> list[int]:
    return store.notification_ids_between(user.pk, 1, 2**63 - 1)


@pytest.fixture
def deep(live_worker):
    """A user with 3x the cap of notifications from two authors (distinct objects: no groups),
    all delivered; their Redis feed holds the newest CAP."""
    admin_settings(notification_max_length=CAP, notification_window_seconds=1_000_000_000)
    me, ana, bo = UserFactory(), Notifier(UserFactory()), Notifier(UserFactory())
    assert auth_client(me).get("/api/notifications/").status_code == 200  # built: delivered to
    ids = [(ana, bo)[i % 2].notify(me, object_id=f"o{i}") for i in range(3 * CAP)]
    jobs_done()
    newest_first = sorted(ids, reverse=True)
    assert redis_ids(me) == newest_first[:CAP]
    assert Notification.objects.filter(recipient=me).count() == 3 * CAP
    return me, ana, bo, newest_first


def test_pages_go_past_the_cap_to_the_first_notification_once_newest_first(deep):
    me, ana, bo, newest_first = deep
    client = auth_client(me)
    for limit in LIMITS:
        items = page_through(client, limit)
        assert members(items) == newest_first, limit  # all, once, newest first
        assert all(len(i["activity_ids"]) == 1 and i["actor_count"] == 1 for i in items)
        assert all(not i["seen"] and not i["read"] for i in items)
        fields = {"id", "actor", "verb", "object_id", "time", "actors", "activity_ids"}
        assert all(fields <= set(i) and i["id"] == i["activity_ids"][0] for i in items)
        by_id = {int(i["id"]): i for i in items}
        assert by_id[newest_first[-1]]["object_id"] == "o0"
        assert by_id[newest_first[-1]]["actor"]["id"] == ana.user.pk
    # The counts keep their rules: the unread notifications the Redis feed holds.
    assert client.get("/api/notifications/counts/").json() == {"unseen": CAP, "unread": CAP}
    # The cursor stays signed: a deep cursor altered is refused.
    first = client.get("/api/notifications/", {"limit": CAP + 2}).json()
    cursor = first["next_cursor"]
    assert cursor and int(first["items"][-1]["id"]) < min(redis_ids(me))  # a deep page's cursor
    res = client.get("/api/notifications/", {"cursor": cursor[:-2] + "xx"})
    assert res.status_code == 400 and "cursor" in res.content.decode()


def test_read_by_deep_ids_and_read_all_mark_the_rows(deep):
    me, ana, bo, newest_first = deep
    client = auth_client(me)
    in_redis, deep_ones = newest_first[1], newest_first[-3:-1]
    res = client.post(
        "/api/notifications/read/", {"ids": [str(i) for i in (in_redis, *deep_ones)]}, format="json"
    )
    assert res.status_code == 200, res.content
    # Today's rules: the counts are those of the Redis feed, one fewer unread there.
    assert res.json() == {"unseen": CAP - 1, "unread": CAP - 1}
    read_rows = set(
        Notification.objects.filter(recipient=me, read=True).values_list("activity_id", flat=True)
    )
    assert read_rows == {in_redis, *deep_ones}
    for limit in (2, 7):
        items = page_through(client, limit)
        assert members(items) == newest_first
        flags = {int(i["id"]): (i["seen"], i["read"]) for i in items}
        assert {i for i, (seen, read) in flags.items() if read} == {in_redis, *deep_ones}
        assert all(seen == read for seen, read in flags.values())  # read implies seen
    # Seen moves the mark over everything: deep items are seen (not read) too.
    assert client.post("/api/notifications/seen/").json() == {"unseen": 0, "unread": CAP - 1}
    items = page_through(client, 4)
    assert all(i["seen"] for i in items)
    assert {int(i["id"]) for i in items if i["read"]} == {in_redis, *deep_ones}
    # Read all: every row, not only those Redis holds.
    res = client.post("/api/notifications/read/", {"all": True}, format="json")
    assert res.json() == {"unseen": 0, "unread": 0}
    assert not Notification.objects.filter(recipient=me, read=False).exists()
    items = page_through(client, 3)
    assert members(items) == newest_first and all(i["read"] and i["seen"] for i in items)
    # Unknown ids are ignored, as before.
    res = client.post("/api/notifications/read/", {"ids": ["12345"]}, format="json")
    assert res.status_code == 200 and res.json() == {"unseen": 0, "unread": 0}


def test_a_group_spanning_the_boundary_is_one_item_with_members_from_both_sides(live_worker):
    admin_settings(notification_max_length=CAP, notification_window_seconds=1_000_000_000)
    me, ana, bo, cy = UserFactory(), *(Notifier(UserFactory()) for _ in range(3))
    auth_client(me).get("/api/notifications/")
    old = ana.notify(me, object_id="shared")  # will lie below the cache boundary
    deep_group_old = cy.notify(me, object_id="deep")
    fillers = [bo.notify(me, object_id=f"f{i}") for i in range(CAP)]
    deep_group_new = ana.notify(me, object_id="deep")
    fillers += [bo.notify(me, object_id=f"g{i}") for i in range(CAP)]
    new = cy.notify(me, object_id="shared")  # the newest: in Redis
    jobs_done()
    assert new in redis_ids(me) and old not in redis_ids(me)
    assert deep_group_new not in redis_ids(me)
    everything = {old, new, deep_group_old, deep_group_new, *fillers}
    client = auth_client(me)
    for limit in LIMITS:
        items = page_through(client, limit)
        heads = [int(i["id"]) for i in items]
        assert sorted(heads, reverse=True) == heads, limit  # items newest first
        flat = members(items)
        assert set(flat) == everything and len(flat) == len(everything), limit  # once each
        shared = [i for i in items if i["object_id"] == "shared"]
        assert [[int(a) for a in i["activity_ids"]] for i in shared] == [[new, old]]
        assert shared[0]["actor_count"] == 2 and items[0] is shared[0]  # on its newest's page
        assert {a["id"] for a in shared[0]["actors"]} == {ana.user.pk, cy.user.pk}
        groups = [i for i in items if i["object_id"] == "deep"]  # both members deep
        assert [[int(a) for a in i["activity_ids"]] for i in groups] == [
            [deep_group_new, deep_group_old]
        ]
        assert len(items) == len(everything) - 2
    # Reading the spanning item by its id marks both rows read; the deep group's too.
    res = client.post(
        "/api/notifications/read/", {"ids": [str(new), str(deep_group_new)]}, format="json"
    )
    assert res.status_code == 200
    read_rows = Notification.objects.filter(recipient=me, read=True)
    assert set(read_rows.values_list("activity_id", flat=True)) == {
        new,
        old,
        deep_group_new,
        deep_group_old,
    }
    items = page_through(client, 3)
    assert [i["read"] for i in items if i["object_id"] in ("shared", "deep")] == [True, True]
    assert not any(i["read"] for i in items if i["object_id"] not in ("shared", "deep"))


def test_hidden_actors_and_deleted_activities_never_show_in_deep_pages(deep):
    me, ana, bo, newest_first = deep
    client = auth_client(me)
    eve = Notifier(UserFactory())
    eves = [eve.notify(me, object_id=f"e{i}") for i in range(2)]
    jobs_done()
    everything = sorted([*newest_first, *eves], reverse=True)
    assert members(page_through(client, 4)) == everything
    # A deleted activity leaves every page at once, before its remove job ran.
    gone = newest_first[-2]
    owner = ana if gone in _ids_of(ana.user) else bo
    assert owner.client.delete(f"/api/activities/{gone}/").status_code == 204
    for limit in (3, 6):
        assert gone not in members(page_through(client, limit))
    jobs_done()
    everything.remove(gone)
    assert members(page_through(client, 5)) == everything
    # A mute hides the muted actor's notifications on every page, deep ones too; so does a
    # block either way.
    mute_create(muter_id=me.pk, muted_id=ana.user.pk)
    block_create(blocker_id=eve.user.pk, blocked_id=me.pk)
    visible = [i for i in everything if i in _ids_of(bo.user)]
    for limit in (1, 3, 5, 8):
        assert members(page_through(client, limit)) == visible


def _ids_of(user) -> set[int]:
    from activities.models import Activity

    return set(Activity.objects.filter(actor=user).values_list("id", flat=True))


def test_a_redis_feed_emptied_by_deletes_or_lost_pages_from_the_rows(deep):
    me, ana, bo, newest_first = deep
    client = auth_client(me)
    for activity_id in newest_first[:CAP]:  # everything the Redis feed holds
        owner = ana if activity_id in _ids_of(ana.user) else bo
        assert owner.client.delete(f"/api/activities/{activity_id}/").status_code == 204
    jobs_done()
    assert redis_ids(me) == []
    rest = newest_first[CAP:]
    for limit in (1, 4, CAP, 2 * CAP):
        assert members(page_through(client, limit)) == rest
    # Redis lost the feed: rebuilt from the newest rows, and the pages are the same.
    store.notifications_forget(me.pk)
    assert members(page_through(client, 3)) == rest
    assert redis_ids(me) == rest[:CAP]


def test_new_arrivals_and_a_lowered_cap_move_the_boundary_between_pages(deep):
    """The boundary moves between pages (new notifications trim the Redis feed; an operator
    lowers the cap): a cursor taken above it still pages every older notification once."""
    me, ana, bo, newest_first = deep
    client = auth_client(me)
    first = client.get("/api/notifications/", {"limit": 2}).json()
    seen = members(first["items"])
    cursor = first["next_cursor"]
    later = [ana.notify(me, object_id=f"late{i}") for i in range(CAP)]  # trims the rest away
    jobs_done()
    assert not set(newest_first) & set(redis_ids(me))
    while cursor:
        body = client.get("/api/notifications/", {"limit": 3, "cursor": cursor}).json()
        seen += members(body["items"])
        cursor = body["next_cursor"]
    assert seen == newest_first
    everything = sorted([*later, *newest_first], reverse=True)
    # Mid-way through the pages, the cap goes down to 2 and one more notification comes.
    first = client.get("/api/notifications/", {"limit": 3}).json()
    seen, cursor = members(first["items"]), first["next_cursor"]
    admin_settings(notification_max_length=2)
    newest = bo.notify(me, object_id="newest")
    jobs_done()
    assert redis_ids(me) == [newest, everything[0]]
    while cursor:
        body = client.get("/api/notifications/", {"limit": 4, "cursor": cursor}).json()
        seen += members(body["items"])
        cursor = body["next_cursor"]
    assert seen == everything
    assert members(page_through(client, 2)) == [newest, *everything]


def test_a_deep_page_is_one_query(deep, django_assert_num_queries):
    me, ana, bo, newest_first = deep
    cursor_body = auth_client(me).get("/api/notifications/", {"limit": CAP + 1}).json()
    cursor = feed_cursor_decode(cursor_body["next_cursor"], "notifications")
    assert cursor.last < min(redis_ids(me))  # below the Redis feed
    notifications.notification_page(user_id=me.pk, limit=3, cursor=cursor)  # settings cached
    with django_assert_num_queries(1):
        items, nxt, _ = notifications.notification_page(user_id=me.pk, limit=3, cursor=cursor)
    assert members(items) == newest_first[CAP + 1 : CAP + 4] and nxt is not None
    # A feed that holds every notification of its user (never trimmed) asks PostgreSQL for
    # nothing, to its end.
    few, author = UserFactory(), Notifier(UserFactory())
    notifications.notification_page(user_id=few.pk, limit=3, cursor=None)  # built
    ids = [author.notify(few, object_id=f"x{i}") for i in range(CAP - 1)]
    jobs_done()
    with django_assert_num_queries(0):
        first, nxt, counts = notifications.notification_page(user_id=few.pk, limit=2, cursor=None)
        rest, end, _ = notifications.notification_page(user_id=few.pk, limit=5, cursor=nxt)
    assert members(first + rest) == ids[::-1] and end is None
    assert counts == {"unseen": CAP - 1, "unread": CAP - 1}
    store.notifications_forget(few.pk)  # rebuilt from fewer rows than the cap: the same
    notifications.notifications_ensure(user_id=few.pk)
    with django_assert_num_queries(0):
        items, end, _ = notifications.notification_page(user_id=few.pk, limit=CAP, cursor=None)
    assert members(items) == ids[::-1] and end is None


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plan")
@pytest.mark.django_db
def test_the_deep_query_reads_indexes_only():
    """20,000 activities, 30 users notified of some each: a deep page of one of them reads
    their rows by an index bounded by the recipient, the activities and actors by primary
    key; nothing is read whole or sorted."""
    from datetime import UTC, datetime, timedelta

    from activities.ids import make_id
    from activities.models import Activity

    users = [UserFactory() for _ in range(30)]
    me, actors = users[0], users[1:6]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    acts = [
        Activity(
            id=make_id(start + timedelta(seconds=n)),
            actor=actors[n % 5],
            verb="v",
            object_type="t",
            object_id=str(n),
            time=start + timedelta(seconds=n),
        )
        for n in range(20_000)
    ]
    Activity.objects.bulk_create(acts, batch_size=5_000)
    Notification.objects.bulk_create(
        [
            Notification(recipient=users[n % 30], activity_id=a.id, actor_id=a.actor_id)
            for n, a in enumerate(acts)
        ],
        batch_size=5_000,
    )
    last = acts[10_000 - 10_000 % 30].id  # one of mine
    sql, params = notifications.notification_rows_sql(
        user_id=me.pk,
        hidden=frozenset({actors[1].pk}),
        max_id=last - 1,
        limit=13,
        shown=(acts[10_100].id, last),
    )
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
        cur.execute("EXPLAIN " + sql, params)
        plan = "\n".join(r[0] for r in cur.fetchall())
    for table in ("feeds_notification", "activities_activity", "auth_user"):
        assert f"Seq Scan on {table}" not in plan, plan
    # The rows: index range scans bounded by the recipient (with 30 users the planner may
    # walk (activity_id, recipient) and skip the others' entries in the index; with many it
    # takes (recipient, activity_id)); the activities and actors by primary key, row by row
    # (a nested loop that stops at the limit).
    scans = [line for line in plan.splitlines() if "Index Cond" in line]
    assert len(scans) == 6 and all("recipient_id = " in s for s in scans[::3]), plan
    assert plan.count("Index Scan using activities_activity_pkey") == 2, plan
    assert plan.count("Index Scan using auth_user_pkey") == 2, plan
    assert "Nested Loop" in plan and "Hash" not in plan and "Sort" not in plan, plan
    rows = notifications.notification_rows(
        user_id=me.pk, hidden=frozenset(), max_id=last - 1, limit=13, shown=None
    )
    mine = [a.id for a in acts[: 10_000 - 10_000 % 30 : 30]][::-1]
    assert rows.ids == mine[:13] and rows.floor == mine[12]


def test_the_boundary_and_the_item_ranges_pure():
    from feeds.aggregation import bucket_floor_id
    from feeds.notifications import item_ranges, rows_boundary

    # Redis read to its end below the cursor: its oldest entry; nothing there: its oldest in
    # the shown range; nothing at all: above everything asked.
    assert rows_boundary([90, 80], [120, 110], 99, 130) == 80
    assert rows_boundary([], [120, 110], 99, 130) == 110
    assert rows_boundary([], [], 99, 130) == 131
    assert rows_boundary([], [], 99, None) == 100
    window_ms = 1000
    a, b = 5 << 22, (5 << 22) + 100  # one bucket
    c = 5000 << 22  # another
    assert item_ranges([a, b, c], window_ms) == [
        (bucket_floor_id(a, window_ms), b),
        (bucket_floor_id(c, window_ms), c),
    ]
