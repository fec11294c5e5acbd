"""`manage.py migrate_feed_keys`: a deployment's keys of an earlier layout (the first: no
virtual-shard hash tag, member = score = id; the second: oldest-first lex encoding) move to the
current layout warm: the same feeds, notification state and TTLs, no rebuild, nothing of the old
layout left, and a second run moves nothing."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from feeds import store
from feeds.store.migrate import encoded_members, new_layout_in_use, old_key_user
from feedsite.shards import vshard
from follows.services import follow_create
from tests.conftest import activate, auth_client, wait_until
from tests.factories import UserFactory
from tests.integration.test_notifications import jobs_done, publish

pytestmark = pytest.mark.worker

MARKER = store.SENTINEL.encode()


def lex2(activity_id: int) -> bytes:
    """A member of the second layout: the id with the top bit set, 7 bytes (oldest first)."""
    return (activity_id | 1 << 55).to_bytes(7, "big")


def to_old_layout(uid: int, layout: str) -> None:
    """Rewrite a user's current keys as an earlier layout wrote them ("score": the first,
    "lex2": the second)."""
    r, p = store.client(), store.prefix()
    tag = f"{{s{vshard(uid)}}}"
    names = {
        "score": (f"{p}:feed:{uid}", f"{p}:tl:{uid}", f"{p}:notif:{{{uid}}}"),
        "lex2": (f"{p}:feed:{tag}:{uid}", f"{p}:tl:{tag}:{uid}", f"{p}:nf:{{{uid}}}"),
    }[layout]
    for new, old in zip(
        (store.feed_key(uid), store.timeline_key(uid), store.notif_key(uid)), names, strict=True
    ):
        members = r.zrange(new, 0, -1)
        if not members:
            continue
        ids = {m: 0 if m == MARKER else store.decode_id(m) for m in members}
        if layout == "score":
            r.zadd(old, {(b"0" if m == MARKER else str(i)): i for m, i in ids.items()})
        else:
            r.zadd(old, {(b"0" if m == MARKER else lex2(i)): 0 for m, i in ids.items()})
        if (ttl := r.ttl(new)) > 0:
            r.expire(old, ttl)
        r.delete(new)
    words = ("unread", "seen") if layout == "score" else ("nf-unread", "nf-seen")
    for new, word in zip((store.unread_key(uid), store.seen_key(uid)), words, strict=True):
        if r.exists(new):
            r.rename(new, f"{p}:{word}:{{{uid}}}")
    if layout == "score":
        r.set(f"{p}:rebuild:{uid}", "1")
    else:
        r.zadd(f"{p}:parked:{tag}:{uid}", {lex2(5): 0})


@pytest.mark.parametrize("layout", ["score", "lex2"])
def test_old_keys_move_warm_and_a_second_run_moves_nothing(live_worker, layout):
    me, ana = UserFactory(), UserFactory()
    activate(me, ana)
    follow_create(follower_id=me.pk, followee_id=ana.pk)
    auth_client(me).get("/api/notifications/")  # builds the notification feed
    posted = [publish(ana, [me.pk], object_id=f"o{n}")["id"] for n in range(3)]
    jobs_done()
    wait_until(lambda: {int(i) for i in posted} <= set(store.feed_ids(me.pk)))
    client = auth_client(me)
    client.post("/api/notifications/read/", {"ids": [posted[0]]}, format="json")
    before = (
        store.feed_ids(me.pk),
        store.timeline_ids(ana.pk),
        client.get("/api/notifications/counts/").json(),
        client.get("/api/notifications/").json()["items"],
    )
    assert before[2] == {"unseen": 2, "unread": 2}
    for uid in (me.pk, ana.pk):
        to_old_layout(uid, layout)
    assert new_layout_in_use() is None
    assert not store.client().exists(store.feed_key(me.pk))  # unmigrated: would be rebuilt

    out = io.StringIO()
    call_command("migrate_feed_keys", "--dry-run", stdout=out)
    assert "dry run: moved feed=2 notif=1 seen=1 tl=1 unread=1; dropped=2" in out.getvalue()
    assert not store.client().exists(store.feed_key(me.pk))  # a dry run changes nothing
    call_command("migrate_feed_keys", stdout=(out := io.StringIO()))
    assert "moved feed=2 notif=1 seen=1 tl=1 unread=1; dropped=2" in out.getvalue(), out.getvalue()
    assert store.client().ttl(store.feed_key(me.pk)) > 0  # the inactivity TTL came along
    old = [
        k
        for k in store.client().scan_iter(match=f"{store.prefix()}:*")
        if old_key_user(k.decode(), store.prefix())
    ]
    assert old == []
    after = (
        store.feed_ids(me.pk),
        store.timeline_ids(ana.pk),
        client.get("/api/notifications/counts/").json(),
        client.get("/api/notifications/").json()["items"],
    )
    assert after == before
    call_command("migrate_feed_keys", stdout=(out := io.StringIO()))
    assert "moved nothing; dropped=0; entries=0" in out.getvalue()


def test_old_key_names_are_told_from_current_ones():
    p = "fs"
    assert old_key_user("fs:feed:12", p) == ("feed", 12)
    assert old_key_user("fs:notif:{12}", p) == ("notif", 12)
    assert old_key_user("fs:feed:{s12}:12", p) == ("feed", 12)  # the second layout
    assert old_key_user("fs:nf:{12}", p) == ("notif", 12)
    assert old_key_user("fs:nf-seen:{12}", p) == ("seen", 12)
    assert old_key_user("fs:home:{s12}:12", p) is None  # current layout
    assert old_key_user("fs:notes:{12}", p) is None
    assert old_key_user("fs:rebuild:{s12}:12", p) is None  # the current rebuild lock
    assert old_key_user("other:feed:12", p) is None
    assert encoded_members([(b"0", 0.0), (b"123", 123.0)]) == {MARKER: 0, store.encode_id(123): 0}
    assert encoded_members([(b"0", 0.0), (lex2(123), 0.0)], "lex2") == {
        MARKER: 0,
        store.encode_id(123): 0,
    }


@pytest.mark.django_db
def test_a_late_move_is_refused_drop_deletes_old_keys_and_a_stopped_move_continues():
    r, p = store.client(), store.prefix()
    r.zadd(f"{p}:feed:41", {"0": 0, "1000": 1000})  # an old feed
    r.zadd(f"{p}:tl:41", {"0": 0, "1000": 1000})
    store.write_feed(42, [2000], cap=10, ttl=0)  # the new version delivered to a new-layout feed
    with pytest.raises(CommandError, match="--drop"):
        call_command("migrate_feed_keys")
    assert r.exists(f"{p}:feed:41", f"{p}:tl:41") == 2  # refused: nothing moved or lost
    assert not r.exists(store.feed_key(41))
    call_command("migrate_feed_keys", "--drop", stdout=(out := io.StringIO()))
    assert "moved nothing; dropped=2" in out.getvalue()
    assert not r.exists(f"{p}:feed:41", f"{p}:tl:41")
    assert store.feed_ids(42) == [2000]  # the new layout is left alone
    # A move that stopped half-way (its marker stands, new keys exist) continues when rerun.
    r.zadd(f"{p}:feed:43", {"0": 0, "3000": 3000})
    r.set(f"{p}:migrating:{{g}}", "1")
    call_command("migrate_feed_keys", stdout=(out := io.StringIO()))
    assert "moved feed=1; dropped=0" in out.getvalue()
    assert store.feed_ids(43) == [3000] and not r.exists(f"{p}:migrating:{{g}}")


@pytest.mark.django_db
def test_where_both_earlier_layouts_hold_a_feed_the_second_wins_and_the_first_is_dropped():
    r, p = store.client(), store.prefix()
    uid = 51
    tag = f"{{s{vshard(uid)}}}"
    r.zadd(f"{p}:feed:{uid}", {"0": 0, "1000": 1000, "1500": 1500})  # stale: 1500 was deleted since
    r.zadd(f"{p}:feed:{tag}:{uid}", {b"0": 0, lex2(1000): 0, lex2(2000): 0})  # the current one
    call_command("migrate_feed_keys", stdout=(out := io.StringIO()))
    assert "moved feed=1; dropped=1" in out.getvalue(), out.getvalue()
    assert store.feed_ids(uid) == [2000, 1000]  # nothing of the stale copy came back
    assert not r.exists(f"{p}:feed:{uid}", f"{p}:feed:{tag}:{uid}")
