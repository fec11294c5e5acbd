"""The notification feed: what was done to me.

PostgreSQL holds the truth (a Notification row per recipient and activity, written with the
activity in one transaction; the seen mark in NotificationSettings; ``read`` on each row). Redis
holds the feed read on every request (feeds.store.notifications): built from PostgreSQL on a
user's first read, written by `notify` fan-out jobs afterwards (the fan-out machinery: job,
batches, retries, dead letters). Items group exactly as home-feed items do, under
``notification_window_seconds``. A recipient with an open stream hears it live; one without gets
it by email (the outbox, NotificationEmail), instantly or in a digest, as they chose.

The Redis feed holds a user's newest ``notification_max_length`` notifications; a page that
reads past its oldest entry goes on in the Notification rows (NotificationSource), so the
history never ends at the cap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import reduce
from operator import or_
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from activities.ids import MAX_ID
from activities.models import Activity
from activities.selectors import activity_to_dict, encode_body
from activities.services import activity_publish
from feedsite.api.cursor import FeedCursor
from feedsite.errors import InvalidInput
from follows.selectors import blocked_either_way, muters_of

from . import store
from .aggregation import bucket_ceiling_id, bucket_floor_id, group_key
from .conf import get_conf
from .hydrate import hydrate
from .models import Notification, NotificationEmail, NotificationSettings
from .read import RedisSource, feed_page, hidden_authors
from .store.notifications import notification_ids_in, notifications_complete

log = logging.getLogger("feeds.notifications")
User = get_user_model()
Email = NotificationSettings.Email


# --- writing: the publish hand-off ----------------------------------------------------------


def notification_recipients(*, actor_id: int, named: Iterable[int]) -> list[int]:
    """Of the user ids a publisher named: those that exist and are active, less the actor and
    blocks either way (all ignored silently)."""
    wanted = {int(i) for i in named if 0 < int(i) < 2**63} - {actor_id}  # others: unknown
    if not wanted:
        return []
    exist = set(User.objects.filter(pk__in=wanted, is_active=True).values_list("pk", flat=True))
    return sorted(exist - blocked_either_way(user_id=actor_id, others=exist))


def notifications_begin(*, activity: Activity) -> bool:
    """In the activity's transaction: the Notification rows of its recipients. Returns whether
    there is anything to deliver (the caller writes the `notify` job)."""
    recipients = notification_recipients(actor_id=activity.actor_id, named=activity.notify)
    Notification.objects.bulk_create(
        [
            Notification(recipient_id=r, activity_id=activity.id, actor_id=activity.actor_id)
            for r in recipients
        ],
        ignore_conflicts=True,
    )
    return bool(recipients)


def follow_notify(*, follower_id: int, followee_id: int) -> None:
    """A follow notifies the followee: an activity of the follower (`followed`, object the
    followee) that goes to no home feed. Following again within notification_window_seconds of
    the last one notifies nothing new."""
    window = get_conf().notification_window_seconds
    recent = Activity.objects.filter(
        actor_id=follower_id,
        verb="followed",
        object_type="user",
        object_id=str(followee_id),
        home=False,
        time__gte=timezone.now() - timedelta(seconds=window),
    )
    if recent.exists():
        return  # followed again inside the window: nothing new
    bucket = int(time.time()) // window  # (and two racing follows find one activity)
    activity_publish(
        actor_id=follower_id,
        data={
            "verb": "followed",
            "object_type": "user",
            "object_id": str(followee_id),
            "foreign_id": f"followed:{followee_id}:{window}:{bucket}",
            "notify": [followee_id],
            "home": False,
        },
    )


# --- delivery: a batch of a `notify` job ------------------------------------------------------


def recipient_ids_in_range(*, activity_id: int, lo: int | None, hi: int | None) -> list[int]:
    qs = Notification.objects.filter(activity_id=activity_id)
    if lo is not None:
        qs = qs.filter(recipient_id__gt=lo)
    if hi is not None:
        qs = qs.filter(recipient_id__lte=hi)
    return list(qs.order_by("recipient_id").values_list("recipient_id", flat=True))


def recipient_count(*, activity_id: int) -> int:
    return Notification.objects.filter(activity_id=activity_id).count()


def recipient_id_boundaries(*, activity_id: int, batch_size: int) -> list[int]:
    ids = recipient_ids_in_range(activity_id=activity_id, lo=None, hi=None)
    return ids[batch_size - 1 :: batch_size]


def notifications_deliver(
    *, activity_id: int, actor_id: int, recipients: Sequence[int]
) -> tuple[int, list[int]]:
    """Into the recipients' notification feeds (those built: the others get it when theirs is
    built from PostgreSQL), then live to those with an open stream and to the outbox for the
    others. A recipient who muted the actor gets it uncounted and unannounced (their reads
    hide it while the mute lasts). Safe to run twice. Returns how many feeds were written and
    the outbox rows to email at once (instant)."""
    blocked = blocked_either_way(user_id=actor_id, others=recipients)
    if blocked:  # a block that landed after the publish: no notification at all
        Notification.objects.filter(activity_id=activity_id, recipient_id__in=blocked).delete()
        recipients = [r for r in recipients if r not in blocked]
    muters = muters_of(actor_id=actor_id, user_ids=recipients)
    if muters:  # stored, but neither counted nor announced: read, as far as counts go
        Notification.objects.filter(activity_id=activity_id, recipient_id__in=muters).update(
            read=True
        )
    written = store.notifications_add(
        [(r, r not in muters) for r in recipients],
        activity_id,
        get_conf().notification_max_length,
    )
    heard = [r for r in recipients if r not in muters]
    # Online: a stream refreshed within 1.5 heartbeats (a crashed stream process stops counting
    # soon; a late refresh costs an email, never a lost notification).
    stale = 1.5 * settings.FEEDSITE_SSE_HEARTBEAT_SECONDS
    live = store.online(heard, time.time(), stale)
    for user_id in live:
        store.announce_notification(user_id, activity_id)
    instant = outbox_add(activity_id=activity_id, user_ids=[r for r in heard if r not in live])
    return len(written), instant


def notifications_withdraw(*, activity_id: int) -> int:
    """A deleted activity leaves every notification feed (and the outbox): from the rows that
    name its recipients, which go too. Returns how many recipients there were."""
    recipients = list(
        Notification.objects.filter(activity_id=activity_id).values_list("recipient_id", flat=True)
    )
    store.notifications_remove(recipients, [activity_id])
    NotificationEmail.objects.filter(
        activity_id=activity_id, state=NotificationEmail.State.PENDING
    ).delete()
    Notification.objects.filter(activity_id=activity_id).delete()
    return len(recipients)


def notifications_quiet(*, user_id: int, actor_ids: Sequence[int]) -> None:
    """A mute or block: the user's notifications from those actors stop counting (read, in
    PostgreSQL and Redis); their items are hidden at read time while it lasts."""
    rows = Notification.objects.filter(recipient_id=user_id, actor_id__in=actor_ids, read=False)
    ids = list(rows.values_list("activity_id", flat=True))
    if ids:
        rows.update(read=True)
        store.notifications_read(user_id, ids)


# --- reading ----------------------------------------------------------------------------------


def notifications_ensure(*, user_id: int) -> None:
    """Build the user's notification feed from PostgreSQL (their newest rows up to the cap, the
    unread among them, the seen mark) when Redis does not hold it."""
    if store.notification_counts(user_id) is not None:
        return
    seen = (
        NotificationSettings.objects.filter(user_id=user_id)
        .values_list("seen_upto", flat=True)
        .first()
    )
    # The mark first: from here on deliveries write to this feed, and the rows read next hold
    # everything delivered before (a delivery's row commits before its batch runs).
    store.notifications_mark_built(user_id, seen or 0)
    cap = get_conf().notification_max_length
    rows = list(
        Notification.objects.filter(recipient_id=user_id)
        .order_by("-activity_id")
        .values_list("activity_id", "read")[:cap]
    )
    ids = [a for a, _ in rows]
    # Fewer rows than the cap: the feed holds every notification (its marker stays), and a
    # page that reads it to its end asks PostgreSQL for nothing older.
    store.notifications_build(
        user_id, ids, [a for a, read in rows if not read], cap=cap, complete=len(rows) < cap
    )
    # Check after write: an activity deleted meanwhile may have been withdrawn from this feed
    # before the rows above were written back (its delete committed before its remove job ran).
    gone = set(ids) - set(Activity.objects.filter(id__in=ids).values_list("id", flat=True))
    if gone:
        store.notifications_remove([user_id], sorted(gone))


def notification_counts(*, user_id: int) -> dict[str, int]:
    """{"unseen", "unread"}: activities, exact up to the cap. One round trip when built."""
    counts = store.notification_counts(user_id)
    if counts is None:
        notifications_ensure(user_id=user_id)
        counts = store.notification_counts(user_id) or (0, 0)
    return {"unseen": counts[0], "unread": counts[1]}


def item_state(activity_ids: Sequence[int], unread: set[int], seen_upto: int) -> dict[str, bool]:
    """An item is read when none of its members is unread, seen when every member is seen (at
    or below the mark, or read). Pure."""
    return {
        "seen": all(a <= seen_upto or a not in unread for a in activity_ids),
        "read": not any(a in unread for a in activity_ids),
    }


# The cursor's bucket below the cache is read back from the rows up to this many notifications
# (their groups were shown on earlier pages: see feeds.read.first_read's "shown").
DEEP_SHOWN_MAX = 1_000


@dataclass(frozen=True)
class NotificationRows:
    """Notification rows of one user read for a page (notification_rows)."""

    ids: list[int]  # below the bound, newest first
    shown: list[int]  # in the "shown" range, newest first
    bodies: dict[int, bytes]  # every row's activity body (activities.selectors.encode_body)
    read: dict[int, bool]  # every row's read flag
    floor: int | None  # the limit was reached: complete down to this id, older rows may follow


def _rows_part(*, below: bool, limit: int, hidden: frozenset[int]) -> str:
    """One part of notification_rows_sql: a range of the user's rows by (recipient,
    activity_id), each with its activity (NULL once deleted) and its actor's name."""
    note, activity = Notification._meta.db_table, Activity._meta.db_table
    user = User._meta.db_table
    bound = "n.activity_id <= %s" if below else "n.activity_id >= %s AND n.activity_id <= %s"
    hide = f"AND n.actor_id NOT IN ({', '.join(['%s'] * len(hidden))})" if hidden else ""
    order = "DESC" if below else "ASC"
    return f"""SELECT * FROM (
    SELECT n.activity_id AS note_id, n.read AS note_read, u.username AS note_username, a.*
    FROM {note} n
    LEFT JOIN {activity} a ON a.id = n.activity_id
    LEFT JOIN {user} u ON u.id = a.actor_id
    WHERE n.recipient_id = %s AND {bound} {hide}
    ORDER BY n.activity_id {order}
    LIMIT {int(limit)}
) AS {"below" if below else "shown"}"""  # noqa: S608 - names from model meta, values bound


def notification_rows_sql(
    *,
    user_id: int,
    hidden: frozenset[int],
    max_id: int,
    limit: int,
    shown: tuple[int, int] | None = None,
) -> tuple[str, list[int]] | None:
    """notification_rows' one query and its parameters (None: nothing to read): the user's
    newest ``limit`` rows at or below ``max_id`` and up to DEEP_SHOWN_MAX of those in
    ``shown`` = (hi, lo), each with its activity and actor (a LEFT JOIN: a deleted activity's
    row still counts against the limit, so the next read starts below it). Index range scans
    of the rows' (recipient, activity_id), each joined to its activity and actor by primary
    key (a nested loop that stops at the limit). Plain SQL: PostgreSQL and SQLite alike."""
    parts: list[str] = []
    params: list[int] = []
    if limit > 0 and max_id > 0:
        parts.append(_rows_part(below=True, limit=limit, hidden=hidden))
        params += [user_id, max_id, *sorted(hidden)]
    if shown is not None and shown[0] >= shown[1]:
        parts.append(_rows_part(below=False, limit=DEEP_SHOWN_MAX, hidden=hidden))
        params += [user_id, shown[1], shown[0], *sorted(hidden)]
    return ("\nUNION ALL\n".join(parts), params) if parts else None


def notification_rows(
    *,
    user_id: int,
    hidden: frozenset[int],
    max_id: int,
    limit: int,
    shown: tuple[int, int] | None = None,
) -> NotificationRows:
    """The user's notifications from PostgreSQL, one query (notification_rows_sql): the newest
    ``limit`` rows at or below ``max_id`` and (``shown`` = (hi, lo)) those in [lo, hi], each
    with its activity's body and its read flag; activities deleted and actors in ``hidden``
    left out."""
    query = notification_rows_sql(
        user_id=user_id, hidden=hidden, max_id=max_id, limit=limit, shown=shown
    )
    rows: list[tuple[int, bool, Activity | None]] = []  # (row's activity id, read, activity)
    for activity in Activity.objects.raw(*query) if query else []:
        extra: Any = activity  # the query's own columns: note_id, note_read, note_username
        if activity.id is None:  # deleted: never shown, but read (the limit counts it)
            rows.append((extra.note_id, bool(extra.note_read), None))
            continue
        activity.actor = User(pk=activity.actor_id, username=extra.note_username)  # no query
        rows.append((extra.note_id, bool(extra.note_read), activity))
    rows.sort(key=lambda row: row[0], reverse=True)
    below = [aid for aid, _, _ in rows if aid <= max_id]
    live = [(a, read) for _, read, a in rows if a is not None]
    return NotificationRows(
        ids=[a.id for a, _ in live if a.id <= max_id],
        shown=[a.id for a, _ in live if a.id > max_id],
        bodies={a.id: encode_body(activity_to_dict(a)) for a, _ in live},
        read={a.id: read for a, read in live},
        floor=below[-1] if limit > 0 and len(below) >= limit else None,
    )


def rows_boundary(
    redis_ids: Sequence[int], redis_shown: Sequence[int], max_id: int, shown_hi: int | None
) -> int:
    """Below which id a page's entries come from the rows, given what a read of the Redis
    feed that reached its end found (at or below ``max_id``, and in the shown range up to
    ``shown_hi``): its oldest entry, or, when it holds nothing read, just above what was
    asked. Pure."""
    asked = max_id if shown_hi is None else max(max_id, shown_hi)
    return min([*redis_ids, *redis_shown, asked + 1])


@dataclass
class NotificationSource:
    """Where a notification page's ids come from (feeds.read.IdSource): the Redis notification
    feed down to its oldest entry, then the user's Notification rows below it (the boundary,
    found on the read that reaches the end of the Redis feed; every id from one side only).
    To feed_page it is one source holding the whole history (no edge): a group spanning the
    boundary is cut as one, and next_cursor is None only once the rows are exhausted too. A
    feed that holds every notification (its marker: feeds.store.notifications) costs no
    query. ``read_flags`` holds the read flag of every entry taken from the rows."""

    user_id: int
    hidden: frozenset[int]
    window_ms: int
    redis: RedisSource
    boundary: int | None = None
    read_flags: dict[int, bool] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return self.redis.partial

    def read(
        self, *, max_id: int | None, count: int, nbodies: int, shown: tuple[int, int] | None
    ) -> store.PageRead:
        upper = MAX_ID if max_id is None else max_id
        ids: list[int] = []
        shown_ids: list[int] = []
        bodies: dict[int, bytes | None] = {}
        if self.boundary is None:
            page = self.redis.read(max_id=max_id, count=count, nbodies=nbodies, shown=shown)
            ids, shown_ids, bodies = list(page.ids), list(page.shown), dict(page.bodies)
            if page.floor is not None or self.redis.partial:
                # The Redis feed goes on below (or a cluster node did not answer: what it
                # holds is unknown, and feed_page starts the next page where this one began).
                return store.PageRead(ids=ids, floor=page.floor, shown=shown_ids, bodies=bodies)
            if notifications_complete(self.user_id):
                # It holds every notification (checked after the read: a feed that holds
                # everything now held everything then), so nothing older exists.
                self.boundary = 0
                return store.PageRead(ids=ids, floor=None, shown=shown_ids, bodies=bodies)
            self.boundary = rows_boundary(ids, shown_ids, upper, shown[0] if shown else None)
        elif self.boundary == 0:
            return store.PageRead(ids=[], floor=None, shown=[], bodies={})
        deep_shown = None
        if shown is not None and shown[1] < self.boundary:
            lo = shown[1]
            deep_shown = (
                min(shown[0], self.boundary - 1, bucket_ceiling_id(lo, self.window_ms)),
                lo,
            )
        rows = notification_rows(
            user_id=self.user_id,
            hidden=self.hidden,
            max_id=min(upper, self.boundary - 1),
            limit=count,
            shown=deep_shown,
        )
        self.read_flags.update(rows.read)
        bodies.update(rows.bodies)
        return store.PageRead(
            ids=ids + rows.ids,
            floor=rows.floor,
            shown=sorted({*shown_ids, *rows.shown}, reverse=True),
            bodies=bodies,
        )


def notification_page(
    *, user_id: int, limit: int, cursor: FeedCursor | None
) -> tuple[list[dict[str, Any]], FeedCursor | None, dict[str, int]]:
    """A page of the notification feed (grouped and paged as the home feed is; past the Redis
    feed's oldest entry from the Notification rows: NotificationSource), each item with its
    seen and read state, and the counts."""
    notifications_ensure(user_id=user_id)
    conf = get_conf()
    hidden = hidden_authors(user_id)
    source = NotificationSource(
        user_id=user_id,
        hidden=hidden,
        window_ms=conf.notification_window_seconds * 1000,
        redis=RedisSource([store.notif_key(user_id)]),
    )
    items, nxt = feed_page(
        user_id=user_id,
        limit=limit,
        cursor=cursor,
        source=source,
        hidden=hidden,
        window_seconds=conf.notification_window_seconds,
    )
    ids = [int(a) for item in items for a in item["activity_ids"]]
    deep = source.read_flags  # entries from the rows carry their own read flag
    counts, seen_upto, unread = store.notification_state(user_id, [i for i in ids if i not in deep])
    unread |= {i for i in ids if deep.get(i) is False}
    for item in items:
        item.update(item_state([int(a) for a in item["activity_ids"]], unread, seen_upto))
    unseen, unread_count = counts or (0, 0)
    return items, nxt, {"unseen": unseen, "unread": unread_count}


# --- seen and read ----------------------------------------------------------------------------


def notifications_mark_seen(*, user_id: int) -> dict[str, int]:
    """Everything up to now is seen."""
    newest = Notification.objects.filter(recipient_id=user_id).aggregate(m=Max("activity_id"))["m"]
    if newest:
        if newest > notification_settings(user_id=user_id).seen_upto:
            NotificationSettings.objects.filter(user_id=user_id).update(seen_upto=newest)
        notifications_ensure(user_id=user_id)
        store.notifications_seen(user_id, newest)
    return notification_counts(user_id=user_id)


def item_ranges(item_ids: Iterable[int], window_ms: int) -> list[tuple[int, int]]:
    """The id ranges (lo, hi) that hold the members of items named by their ids (an item's id
    is its newest member's): from its bucket's first id up to it, one range per bucket.
    Pure."""
    highest: dict[int, int] = {}
    for item_id in item_ids:
        lo = bucket_floor_id(item_id, window_ms)
        highest[lo] = max(highest.get(lo, 0), item_id)
    return sorted(highest.items())


def _members(user_id: int, item_ids: Iterable[int], window_seconds: int) -> list[int]:
    """The activities of the user's notification items named by their ids (an item's id is its
    newest member's): every notification in the item's time bucket, up to it, with the same
    verb and object; from the Redis feed, and below its oldest entry from the rows (a deep
    item, or a group spanning the boundary). Unknown ids give nothing."""
    window_ms = window_seconds * 1000
    item_ids = set(item_ids)
    ranges = item_ranges(item_ids, window_ms)
    if not ranges:
        return []
    found, boundary = notification_ids_in(user_id, ranges)  # one round trip
    candidates = {i for ids in found for i in ids}
    keys: dict[int, tuple] = {}  # id -> group key
    deep = [] if boundary is None else [(lo, min(hi, boundary - 1)) for lo, hi in ranges]
    deep = [(lo, hi) for lo, hi in deep if lo <= hi]
    if deep:  # the rows below the Redis feed's oldest entry: one query
        rows = Notification.objects.filter(recipient_id=user_id).filter(
            reduce(or_, (Q(activity_id__range=r) for r in deep))
        )
        for aid, verb, object_type, object_id in Activity.objects.filter(
            pk__in=rows.values("activity_id")
        ).values_list("id", "verb", "object_type", "object_id"):
            keys[aid] = group_key(verb, object_type, object_id, aid, window_ms)
    bodies = hydrate(sorted(candidates - set(keys)))  # one bulk read
    for aid, b in bodies.items():
        keys[aid] = group_key(b["verb"], b["object_type"], b["object_id"], aid, window_ms)
    members: set[int] = set()
    for item_id in item_ids:
        head = keys.get(item_id)
        if head is None:
            continue  # not a notification of theirs (or deleted)
        floor = bucket_floor_id(item_id, window_ms)
        members.update(i for i, key in keys.items() if key == head and floor <= i <= item_id)
    return sorted(members)


def notifications_mark_read(*, user_id: int, item_ids: Sequence[int] | None) -> dict[str, int]:
    """Mark the named items' members read (None: every notification). Read implies seen."""
    notifications_ensure(user_id=user_id)
    rows = Notification.objects.filter(recipient_id=user_id, read=False)
    if item_ids is None:
        rows.update(read=True)
        store.notifications_read(user_id, None)
    else:
        members = _members(user_id, item_ids, get_conf().notification_window_seconds)
        if members:
            rows.filter(activity_id__in=members).update(read=True)
            store.notifications_read(user_id, members)
    return notification_counts(user_id=user_id)


def parse_read_request(data: Any) -> list[int] | None:
    """``{"ids": [item ids]}`` -> the ids, ``{"all": true}`` -> None; anything else is a 400.
    Ids are the items' ``id`` strings (integers are taken too). Pure."""
    if not isinstance(data, dict) or set(data) not in ({"ids"}, {"all"}):
        raise InvalidInput('send {"ids": [item ids]} or {"all": true}', field="ids")
    if "all" in data:
        if data["all"] is not True:
            raise InvalidInput('"all" must be true', field="all")
        return None
    ids = data["ids"]
    if not isinstance(ids, list) or len(ids) > 500:
        raise InvalidInput('"ids" must be a list of at most 500 item ids', field="ids")
    out = []
    for raw in ids:
        text = str(raw)
        if isinstance(raw, bool) or not isinstance(raw, int | str) or not text.isascii():
            raise InvalidInput(f"not an item id: {raw!r}", field="ids")
        if not text.isdigit():
            raise InvalidInput(f"not an item id: {raw!r}", field="ids")
        value = int(raw)
        if not 0 < value < 2**63:
            raise InvalidInput(f"not an item id: {raw!r}", field="ids")
        out.append(value)
    return out


# --- email: the outbox ------------------------------------------------------------------------


def notification_settings(*, user_id: int) -> NotificationSettings:
    row, _ = NotificationSettings.objects.get_or_create(user_id=user_id)
    return row


def notification_settings_update(*, user_id: int, changes: dict[str, Any]) -> NotificationSettings:
    row = notification_settings(user_id=user_id)
    if not changes:
        return row
    for name, value in changes.items():
        setattr(row, name, value)
    row.save(update_fields=list(changes))
    return row


def outbox_add(*, activity_id: int, user_ids: Sequence[int]) -> list[int]:
    """Owe an email to offline recipients who want one (a mode other than off, an address):
    one row each, once (a redelivered batch finds them there). Returns the instant rows still
    pending, for the caller to send now; digest rows wait for the digest sweep (which also
    sends instant rows left pending)."""
    if not user_ids:
        return []
    modes = dict(
        NotificationSettings.objects.filter(user_id__in=user_ids).values_list("user_id", "email")
    )
    with_address = set(
        User.objects.filter(pk__in=user_ids).exclude(email="").values_list("pk", flat=True)
    )
    rows = [
        NotificationEmail(recipient_id=u, activity_id=activity_id, mode=modes.get(u, Email.DIGEST))
        for u in user_ids
        if u in with_address and modes.get(u, Email.DIGEST) != Email.OFF
    ]
    if not rows:
        return []
    NotificationEmail.objects.bulk_create(rows, ignore_conflicts=True)
    instant = NotificationEmail.objects.filter(
        activity_id=activity_id,
        recipient_id__in=[r.recipient_id for r in rows if r.mode == Email.INSTANT],
        state=NotificationEmail.State.PENDING,
    )
    return list(instant.values_list("id", flat=True))


def _line(body: dict[str, Any]) -> str:
    return f"{body['actor']['username']} {body['verb']} {body['object_type']} {body['object_id']}"


def email_send(*, row_ids: Sequence[int], now=None) -> int:
    """Send what the rows owe, one email per recipient, and mark them sent, under row locks
    (two senders never send the same row; a send that fails leaves them pending, to be tried
    again). Returns how many rows were sent."""
    sent = 0
    with transaction.atomic():
        rows = list(
            # Only the outbox rows are locked ("self"): two senders of one recipient's rows
            # must not skip each other's over the shared user row.
            NotificationEmail.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(id__in=row_ids, state=NotificationEmail.State.PENDING)
            .select_related("recipient")
            .order_by("recipient_id", "activity_id")
        )
        by_user: dict[int, list[NotificationEmail]] = {}
        for row in rows:
            by_user.setdefault(row.recipient_id, []).append(row)
        bodies = hydrate([r.activity_id for r in rows])
        now = now or timezone.now()
        for user_id, owed in list(by_user.items()):
            if any(r.mode == Email.DIGEST for r in owed) and not _digest_due(user_id, now):
                del by_user[user_id]  # another sweep sent this period's digest meanwhile
        for owed in by_user.values():
            lines = [_line(bodies[r.activity_id]) for r in owed if r.activity_id in bodies]
            if lines:  # (an activity deleted meanwhile is owed no email)
                subject = lines[0] if len(lines) == 1 else f"{len(lines)} new notifications"
                send_mail(
                    subject=f"[feedsite] {subject}"[:200],
                    message="\n".join(lines) + "\n",
                    from_email=None,
                    recipient_list=[owed[0].recipient.email],
                )
            NotificationEmail.objects.filter(id__in=[r.id for r in owed]).update(
                state=NotificationEmail.State.SENT, sent_at=now
            )
            if any(r.mode == Email.DIGEST for r in owed):
                NotificationSettings.objects.filter(user_id=owed[0].recipient_id).update(
                    last_digest_at=now
                )
            sent += len(owed)
    return sent


def _digest_due(user_id: int, now) -> bool:
    """Whether the user's digest period has passed, under a lock on their settings row (two
    overlapping sweeps cannot both send this period's digest)."""
    row = NotificationSettings.objects.select_for_update().filter(user_id=user_id).first()
    if row is None or row.last_digest_at is None:
        return True
    return row.last_digest_at <= now - timedelta(minutes=row.digest_minutes)


def emails_due(*, now=None) -> list[list[int]]:
    """The outbox rows to send now, one list per email: every digest recipient whose period has
    passed since their last digest (all their pending rows together), and instant rows left
    pending for over a minute (a lost task, a mail-server outage)."""
    now = now or timezone.now()
    pending = NotificationEmail.objects.filter(state=NotificationEmail.State.PENDING)
    stuck = pending.filter(mode=Email.INSTANT, created_at__lt=now - timedelta(minutes=1))
    groups = [[row_id] for row_id in stuck.values_list("id", flat=True)[:1000]]
    digest = pending.filter(mode=Email.DIGEST)
    for user_id in sorted(set(digest.values_list("recipient_id", flat=True))):
        row = notification_settings(user_id=user_id)
        if row.last_digest_at and row.last_digest_at > now - timedelta(minutes=row.digest_minutes):
            continue
        groups.append(list(digest.filter(recipient_id=user_id).values_list("id", flat=True)))
    return groups


def notification_forget(*, user_id: int) -> None:
    store.notifications_forget(user_id)
