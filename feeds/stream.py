"""GET /api/feed/stream/: server-sent events, a plain ASGI application (feedsite.asgi routes the
path here; everything else goes to Django).

A stream holds no database connection and no thread while it waits. Authentication (the token
cache, or the session) and the followee list are read once, at connect, and the connection goes
back at once. Every stream of the process is served by one gateway: one Redis pub/sub connection,
subscribed once to each author channel some stream needs and to each streaming user's control
channel (follows and unfollows made while a stream is open); a message is hydrated once and
handed, in memory, to the queues of the streams that want it. A client too slow to read fills its
bounded queue and is dropped with a final `dropped` event.

Event ids and the catch-up. Activities reach a stream out of id order (concurrent publishers, a
fan-out job delayed), so an event's `id:` is the stream's high-water activity id: the largest
it sent, never lowered by an older arrival (which carries the current one). A stream is owed
every feed activity the reader's feed did not hold when it opened; before it sends feed
activities it writes them into its user's ledger in Redis (feeds.replay says why ids alone
cannot make a reconnect exact). A reconnect with `Last-Event-ID` (on any process) finds there
what the stream that sent that id had sent, and replays from the feed (Redis, then PostgreSQL
for what Redis no longer holds) every owed activity it had not sent, from 5 minutes (the
publish lag) below that id up: once, oldest first, with current bodies; more than 1,000 give
`event: reset`, whose id is the feed's newest (the client reloads the feed). `event:
notification` and `event: update` (an edit: the feed item with its new body, to every stream
hearing its author) carry the current id (none before the first feed activity) and move none.

When the gateway's subscription is lost (Redis restarted, the connection dropped), whatever was
published meanwhile never reaches it, and an open stream has no reason to reconnect. So once the
connection is back, the gateway subscribes again to every channel, reloads each streaming
user's followees (a follow announced in the gap is lost too), sends a PING and, when its pong
proves the subscriptions are in force, replays from Redis what those channels may have carried
since shortly before the loss: each subscribed author's timeline (written before its
announcement) and each streaming user's notification feed (written before its announcement),
through the same once-per-activity queues, so nothing arrives twice. On Redis Cluster the
subscription moves to another node when its node dies (feeds.store.pubsub_nodes), and a replay
that finds the store unavailable (a master lost, its replica not yet promoted) is tried again
every second for up to 30 s, the streams kept open. A replay that still cannot be read ends
every stream with `event: dropped`, and clients reconnect with `Last-Event-ID`.

Every FEEDSITE_SSE_RECHECK_SECONDS (15) the gateway checks every open stream's credentials again,
in one pass for the process: one pipelined round trip reads the token cache entries of all the
open streams' tokens, and only those the cache does not confirm (expired entries, tombstones of
revoked tokens) go to PostgreSQL, as a new connect's lookup does. A stream whose token or
session no longer authenticates (logout, logoutall, expiry, user deactivated) gets a final
`event: revoked` and ends, at most 15 s after the revocation; reconnecting answers 401.

A client that stops reading fills the kernel's buffers, then the server's write buffer, and the
server's send waits; after FEEDSITE_SSE_WRITE_TIMEOUT_SECONDS (30) with no byte taken, the stream
ends and its connection is aborted (a graceful close would wait for the client to take what is
buffered). The process holds at most FEEDSITE_SSE_MAX_STREAMS_PER_PROCESS streams: a connect
takes its slot before its first await, so a burst of connects cannot overshoot the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from importlib import import_module
from typing import Any
from urllib.parse import parse_qs

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connections
from django.http.request import split_domain_port, validate_host
from rest_framework import exceptions

from activities.ids import make_id
from feedsite.api.auth import (
    claimed_user_id,
    entry_fields,
    entry_user,
    header_user,
    token_digest,
    token_from_header,
    token_still_valid,
)
from feedsite.middleware import apply_proxy_headers

from . import store
from .followees import listened, listened_load, listened_now
from .hydrate import hydrate
from .notifications import notifications_ensure
from .read import hidden_authors, single_item
from .replay import (
    LAG_IDS,
    LAG_SECONDS,
    LEDGER_TTL_SECONDS,
    TRIM_MEMBER,
    Replay,
    feed_replay,
    floor_member,
    known_member,
    ledger_trim_below,
    opening_snapshot,
    plan_catch_up,
    sent_member,
    takeover_notes,
)
from .store.followees import Source, followees_from_cache
from .store.keys import hidden_key
from .store.live import connect_reads, ledger_note, ledger_read, token_entries

log = logging.getLogger("feeds.stream")
PATH = "/api/feed/stream/"
# A replay after a lost subscription covers activities made up to 5 minutes before the loss:
# an announcement is made when the fan-out job starts, which a paused broker or a killed
# worker (re-enqueued by the sweeper) can delay by minutes after the activity's id was made.
REPLAY_MARGIN_SECONDS = LAG_SECONDS  # 300: the lag the reconnect's catch-up assumes too
REPLAY_MAX = 100  # per author and per user: more in one gap ends the stream (queue full)
# A pong not back within 5 s: the connection is presumed dead and the resync starts again.
PONG_TIMEOUT_SECONDS = 5.0
# A replay whose reads find the store unavailable (a master lost: its replica is promoted within
# cluster-node-timeout, 15 s, plus the election) is tried again every second for this long after
# the loss, the streams kept open, before it gives up and ends them (their reconnects would need
# the same reads).
REPLAY_RETRY_SECONDS = 30.0
REPLAY_RETRY_EVERY_SECONDS = 1.0
TOO_SLOW = b"too slow: reconnect"
INTERRUPTED = b"live updates interrupted: reconnect"
REVOKED = b"credentials revoked or expired, or the user deactivated: sign in again"
RESET = "more activities were missed than a reconnect replays: reload the feed"
# How often at most a stream's ledger write also trims it and renews its lifetime (the
# lifetime is a day; a trim keeps 2 x LAG plus an hour below the stream's id).
LEDGER_TRIM_SECONDS = 60.0
# Events taken from a stream's queue and written at once (one ledger write, one send).
WRITE_BATCH = 100
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """The process's threads for database work (FEEDSITE_SSE_DB_THREADS): a connect whose
    token or followees the caches do not hold, a catch-up reading PostgreSQL, a body not cached.
    Several at once: a reconnect storm's misses are not served one at a time (asgiref's default
    runs every sync call on one thread)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(settings.FEEDSITE_SSE_DB_THREADS, thread_name_prefix="sse-db")
    return _POOL


_CATCH_UPS: asyncio.Semaphore | None = None
# Catch-ups' reads (and new streams' opening snapshots) running at once in a process (the
# writing of a catch-up to its client holds no slot: a client that stops reading blocks no one). A reconnect
# storm's connects are cheap when the caches are warm (one round trip, no thread); its catch-ups
# are not (a few round trips and the bodies, on the pool's threads, holding the GIL). Two at a
# time leave the event loop free to answer every connect first; the catch-ups follow.
CATCH_UP_CONCURRENCY = 2


# While connects arrive faster than this (per process, per 100 ms), a catch-up's reads wait
# (up to CATCH_UP_MAX_DEFER seconds): in a reconnect storm every client gets its first bytes
# before the catch-ups take the CPU; at everyday rates none waits.
CONNECT_BURST = 20
CATCH_UP_MAX_DEFER = 5.0


@contextlib.asynccontextmanager
async def _catch_up_slots() -> AsyncIterator[None]:
    """A slot for a catch-up's reads (CATCH_UP_CONCURRENCY per process), taken once connects
    are not arriving in a burst."""
    global _CATCH_UPS
    if _CATCH_UPS is None:
        _CATCH_UPS = asyncio.Semaphore(CATCH_UP_CONCURRENCY)
    async with _CATCH_UPS:
        gw, deadline = gateway(), time.monotonic() + CATCH_UP_MAX_DEFER
        while min(gw.burst_until, deadline) > time.monotonic():
            await asyncio.sleep(0.05)
        yield


def _with_db_returned(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``fn`` on the pool's threads, off the event loop, its database connection handed back
    (to psycopg's pool) as soon as it returns."""

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return sync_to_async(run, thread_sensitive=False, executor=_pool())


def _session_user(session_key: str) -> Any:
    from django.contrib.auth import get_user
    from django.http import HttpRequest

    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(request)
    return user if user.is_authenticated else None


def event(item: dict[str, Any], kind: bytes = b"activity") -> bytes:
    """An event without its id line: each stream puts its own high-water id in front."""
    return b"event: %s\ndata: %s\n\n" % (kind, orjson.dumps(item))


def _id_at(moment: float) -> int:
    """The smallest activity id made at ``moment`` (seconds since the epoch)."""
    return make_id(datetime.fromtimestamp(moment, UTC), low=0)


class Stream:
    """One open stream: what it follows, what it was sent, and a bounded queue of events.
    ``floor``: the gateway's replay after a lost subscription offers it activities above this
    id only (when it opened, or where its catch-up began). ``credential``: what authenticated
    it, ("token", key) or ("session", key), re-checked by the gateway. ``tag``: its name in
    the registry of open streams and in the ledger; ``high``: the largest activity id it sent
    (every event's id); ``owed``: its floor in the ledger, and ``known`` what the feed held
    above it when the stream opened (feeds.replay.opening_snapshot), written down with its
    first events."""

    __slots__ = (
        "user_id",
        "authors",
        "hidden",
        "queue",
        "sent",
        "dropped",
        "ending",
        "floor",
        "credential",
        "tag",
        "high",
        "noted",
        "trimmed_at",
        "owed",
        "known",
    )

    def __init__(
        self,
        user_id: int,
        authors: set[Source],
        maxsize: int,
        floor: int = 0,
        credential: tuple[str, str] | None = None,
        tag: str = "",
    ) -> None:
        self.user_id = user_id
        self.authors = authors  # user ids and followed objects' names (feeds.followees)
        self.hidden: frozenset[int] = frozenset()  # authors whose objects' activities it drops
        # (the feed activity the event sends, None for another kind; the event without its id)
        self.queue: asyncio.Queue[tuple[int | None, bytes] | None] = asyncio.Queue(maxsize)
        self.sent: set[int] = set()
        self.dropped: bytes | None = None  # why, once dropped
        self.ending = b"dropped"  # the final event's name
        self.floor = floor
        self.credential = credential
        self.tag = tag or uuid.uuid4().hex[:16]
        self.high: int | None = None
        self.noted = False  # its floor is in the ledger
        self.trimmed_at = 0.0  # when its last write trimmed the ledger (time.monotonic)
        self.owed = floor
        self.known: list[int] = []

    def offer(self, key: int, data: bytes) -> None:
        """Queue an event once per key (an activity id; a notification's, negated); a full
        queue drops the stream (see Gateway). A feed activity's event raises the stream's id."""
        if self.dropped or key in self.sent:
            return
        self.sent.add(key)
        if len(self.sent) > 10_000:  # bounded memory: old ids cannot arrive again anyway
            self.sent = set(sorted(self.sent)[-1_000:])
        self._put((key if key > 0 else None, data))

    def push(self, data: bytes) -> None:
        """Queue an event that may come more than once and moves no id (an edit's update)."""
        if not self.dropped:
            self._put((None, data))

    def _put(self, queued: tuple[int | None, bytes]) -> None:
        try:
            self.queue.put_nowait(queued)
        except asyncio.QueueFull:
            self.drop(TOO_SLOW)

    def stamp(self, batch: Iterable[tuple[int | None, bytes]]) -> tuple[bytes, dict[str, int]]:
        """The events of ``batch`` with their id lines, and the ledger entries of the feed
        activities among them (member: the id its event carries). Each feed activity raises
        the stream's id to itself, never lowers it; an event before the first one has no id
        (the client keeps the one it had)."""
        out, notes = [], {}
        for activity_id, data in batch:
            if activity_id is not None:
                self.high = activity_id if self.high is None else max(self.high, activity_id)
                notes[sent_member(self.tag, activity_id)] = self.high
            out.append((b"id: %d\n" % self.high if self.high is not None else b"") + data)
        return b"".join(out), notes

    def drop(self, why: bytes, ending: bytes = b"dropped") -> None:
        """End the stream with a final `dropped` event (its client reconnects with
        Last-Event-ID), or ``ending`` (`revoked`: its credentials no longer hold); what is
        still queued is not sent, so that reconnect replays it."""
        if self.dropped:
            return
        self.dropped = why
        self.ending = ending
        old, self.queue = self.queue, asyncio.Queue(1)
        self.queue.put_nowait(None)  # the writer's cue for the final event
        if not old.full():  # a writer waiting on the old queue wakes now, not at its heartbeat
            old.put_nowait(None)


class Gateway:
    """Every stream of this process on one pub/sub connection (the gateway pattern)."""

    def __init__(self) -> None:
        self.by_author: dict[Source, set[Stream]] = {}  # an author's id or an object's name
        self.by_user: dict[int, set[Stream]] = {}
        self.count = 0  # slots taken (reserve): streams open or connecting
        # Connects counted per 100 ms window; past CONNECT_BURST in one, catch-ups wait until
        # ``burst_until`` (_catch_up_slots).
        self._window, self._window_connects, self.burst_until = 0.0, 0, 0.0
        self._redis: Any = None
        self._live: store.LiveSubscription | None = None
        self._pump: asyncio.Task | None = None
        self._rechecker: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        # The subscription's health: when it was last known whole, when it was lost (None: it
        # is not), the reconnects seen, and the PING awaited before the replay.
        self._healthy_at = time.time()
        self._lost_at: float | None = None
        self._reconnects = 0
        self._ping: int | None = None
        self._ping_at = 0.0
        self._resync_at = 0.0  # no resync before (a replay waiting for the store)
        self._pings = 0
        self.ledger = LedgerWriter()

    @property
    def redis(self) -> Any:
        if self._redis is None:
            self._redis = store.async_client()
        return self._redis

    def reserve(self) -> bool:
        """Take one of the process's stream slots, or False when they are all taken. No await
        between the check and the count: a burst of connects cannot overshoot the cap (the
        check used to come before the connect's awaits and the count after them). Every
        reserve is paired with a release."""
        if self.count >= settings.FEEDSITE_SSE_MAX_STREAMS_PER_PROCESS:
            return False
        self.count += 1
        now = time.monotonic()
        if now - self._window > 0.1:
            self._window, self._window_connects = now, 0
        self._window_connects += 1
        if self._window_connects > CONNECT_BURST:
            self.burst_until = now + 0.2
        return True

    def release(self) -> None:
        self.count -= 1

    async def _start(self) -> store.LiveSubscription:
        if self._live is None:
            self._live = store.LiveSubscription(self.redis)
            await self._live.open()
            self._pump = asyncio.create_task(self._run())
            self._rechecker = asyncio.create_task(self._recheck_every())
        return self._live

    async def add(self, stream: Stream) -> None:
        async with self._lock:
            live = await self._start()
            await live.follow([a for a in stream.authors if a not in self.by_author])
            for author in stream.authors:
                self.by_author.setdefault(author, set()).add(stream)
            if stream.user_id not in self.by_user:
                await live.watch_follows([stream.user_id])
            self.by_user.setdefault(stream.user_id, set()).add(stream)

    async def remove(self, stream: Stream) -> None:
        async with self._lock:
            await self._unfollow(stream, stream.authors)
            users = self.by_user.get(stream.user_id, set())
            users.discard(stream)
            if not users:
                self.by_user.pop(stream.user_id, None)
                if self._live is not None:
                    await self._live.unwatch_follows([stream.user_id])

    async def _unfollow(self, stream: Stream, authors: Iterable[Source]) -> None:
        gone = []
        for author in authors:
            streams = self.by_author.get(author)
            if streams is None:
                continue
            streams.discard(stream)
            if not streams:
                del self.by_author[author]
                gone.append(author)
        if gone and self._live is not None:
            await self._live.unfollow(gone)

    async def _hidden_changed(self, user_id: int) -> None:
        """The user's blocks or mutes changed (feeds.services.hidden_refresh rewrote the cached
        list, then announced it): their streams take the new list, read once for them all."""
        streams = list(self.by_user.get(user_id, ()))
        if streams:
            hidden = await _hidden_now(self, user_id)
            for stream in streams:
                stream.hidden = hidden

    async def _follows_changed(self, user_id: int, author_id: Source, following: bool) -> None:
        async with self._lock:
            for stream in list(self.by_user.get(user_id, ())):
                if following and author_id not in stream.authors:
                    stream.authors.add(author_id)
                    if author_id not in self.by_author and self._live is not None:
                        await self._live.follow([author_id])
                    self.by_author.setdefault(author_id, set()).add(stream)
                elif not following and author_id in stream.authors and author_id != user_id:
                    stream.authors.discard(author_id)
                    await self._unfollow(stream, [author_id])

    async def _run(self) -> None:
        assert self._live is not None
        while True:
            try:
                started = time.time()
                message = await self._live.next_message(timeout=1.0)
                if self._live.reconnects != self._reconnects:  # reconnected during the read
                    self._reconnects = self._live.reconnects
                    self._lost()
                if self._lost_at is None:
                    self._healthy_at = started
                elif (
                    self._ping is None or time.time() - self._ping_at > PONG_TIMEOUT_SECONDS
                ) and time.time() >= self._resync_at:
                    await self._resubscribe()
                if message is None:
                    continue
                kind, key, value = message
                if kind == "pong":
                    if value == self._ping:
                        await self._replay()
                elif kind == "activity":
                    await self._deliver(author_id=key, activity_id=value)
                elif kind == "update":
                    await self._update(author_id=key, activity_id=value)
                elif kind == "notification":
                    await self._notify(user_id=key, activity_id=value)
                elif kind == "hidden":
                    await self._hidden_changed(key)
                else:
                    following, source = value
                    await self._follows_changed(key, source, following=following)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop every stream
                if isinstance(exc, store.STORE_ERRORS) and store.store_unavailable(exc):
                    log.warning("stream gateway: Redis unavailable (%s)", exc)
                else:
                    log.exception("stream gateway: message failed")
                # Maybe the subscription too (a reconnect whose resubscription failed raises
                # here without counting): resync to be sure; a replay of nothing missed is a
                # no-op, each stream sending an activity once.
                self._lost()
                await asyncio.sleep(0.5)

    def _lost(self) -> None:
        """The subscription may have missed messages since it was last known whole."""
        if self._lost_at is None:
            self._lost_at = self._healthy_at
        self._ping = None  # a PING sent before is no proof: subscribe and ping again

    async def _resubscribe(self) -> None:
        """Subscribe to every channel again, with each streaming user's followees reloaded
        from PostgreSQL (follows announced in the gap), then PING: its pong starts the replay."""
        assert self._live is not None
        users = list(self.by_user)
        followees = await _with_db_returned(lambda: {u: listened_now(u) for u in users})()
        async with self._lock:
            for user_id, (authors, hidden) in followees.items():
                for stream in list(self.by_user.get(user_id, ())):
                    stream.hidden = hidden
                    added, gone = authors - stream.authors, stream.authors - authors - {user_id}
                    stream.authors |= added
                    for author in added:
                        self.by_author.setdefault(author, set()).add(stream)
                    stream.authors -= gone
                    await self._unfollow(stream, gone)
            await self._live.resubscribe(list(self.by_author), list(self.by_user))
            self._pings += 1
            self._ping, self._ping_at = self._pings, time.time()
            await self._live.probe(self._ping)

    async def _replay(self) -> None:
        """Every channel is subscribed again: offer each stream what its authors published and
        its user was notified of since shortly before the loss (the once-per-activity queues
        drop what was sent already). If Redis is unavailable, the resync (subscribe, PING,
        replay) runs again a second later, for up to REPLAY_RETRY_SECONDS after the loss; if it
        still cannot be read, every stream ends instead."""
        assert self._lost_at is not None
        lost_at = self._lost_at
        floor = _id_at(lost_at - REPLAY_MARGIN_SECONDS)
        self._lost_at, self._ping = None, None
        # What an object's channel carried meanwhile is not in one timeline (push objects keep
        # none): a stream hearing an object ends, and its client's reconnect catches up from
        # its feed, exactly (Last-Event-ID).
        for key in [k for k in self.by_author if isinstance(k, str)]:
            for stream in list(self.by_author.get(key, ())):
                stream.drop(INTERRUPTED)
        authors = [a for a in self.by_author if isinstance(a, int)]
        users = list(self.by_user)
        try:
            activities, notifications, hidden = await _with_db_returned(_missed)(
                authors, users, floor
            )
        except Exception as exc:  # noqa: BLE001 - whatever failed, the clients' reconnect replays
            if (
                isinstance(exc, store.STORE_ERRORS)
                and store.store_unavailable(exc)
                and time.time() - lost_at < REPLAY_RETRY_SECONDS
            ):
                # A failover under way: subscribe, ping and replay again in a second (the
                # queues send each activity once), the streams kept open meanwhile.
                log.warning("stream gateway: replay waits for Redis (%s)", exc)
                self._lost_at, self._resync_at = lost_at, time.time() + REPLAY_RETRY_EVERY_SECONDS
                return
            log.exception("stream gateway: replay failed; open streams end to be replayed")
            for streams in list(self.by_user.values()):
                for stream in list(streams):
                    stream.drop(INTERRUPTED)
            return
        log.warning(
            "stream gateway: subscription lost and restored; offered again %d activities and %d "
            "notifications to %d streams (each sends those it has not)",
            len(activities),
            len(notifications),
            self.count,
        )
        for activity_id, author_id in activities:
            await self._deliver(author_id=author_id, activity_id=activity_id, replay=True)
        for activity_id, user_id in notifications:
            await self._notify(
                user_id=user_id, activity_id=activity_id, hidden=hidden.get(user_id, ())
            )

    async def _recheck_every(self) -> None:
        """Re-check every open stream's credentials each FEEDSITE_SSE_RECHECK_SECONDS."""
        while True:
            await asyncio.sleep(settings.FEEDSITE_SSE_RECHECK_SECONDS)
            try:
                await self.recheck()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next pass tries again; streams stay open
                log.exception("stream credential re-check failed")

    async def recheck(self) -> int:
        """One pass over every open stream of the process: a stream whose token or session no
        longer authenticates its user gets `event: revoked` and ends. Returns how many ended.
        Cost: one pipelined Redis round trip per 1,000 distinct tokens, plus one database query
        per token the cache does not confirm (its entry expired, or a revocation's tombstone)
        and per session stream."""
        streams = [s for group in self.by_user.values() for s in group if not s.dropped]
        credentials = {s.credential: s.user_id for s in streams if s.credential is not None}
        if not credentials:
            return 0
        revoked = await _revoked(self.redis, credentials)
        ended = 0
        for stream in streams:
            if stream.credential in revoked:
                stream.drop(REVOKED, b"revoked")
                ended += 1
        if ended:
            log.info("stream re-check: %d of %d streams revoked", ended, len(streams))
        return ended

    async def _body(self, activity_id: int) -> dict[str, Any] | None:
        raw = await store.body_get_async(self.redis, activity_id)
        if raw is not None:
            return orjson.loads(raw)
        # Not cached: PostgreSQL once for every stream (None: deleted meanwhile).
        return (await _with_db_returned(hydrate)([activity_id])).get(activity_id)

    async def _deliver(self, *, author_id: Source, activity_id: int, replay: bool = False) -> None:
        streams = self.by_author.get(author_id)
        if replay:  # only to streams owed it (made after the stream opened, or its Last-Event-ID)
            streams = {s for s in streams or () if activity_id > s.floor}
        if not streams:
            return
        body = await self._body(activity_id)
        if body is None:
            return
        if isinstance(author_id, str):  # an object's channel: not to those hiding its actor
            actor = body["actor"]["id"]
            streams = {s for s in streams if actor not in s.hidden}
        data = event(single_item(body))
        for stream in list(streams):
            stream.offer(activity_id, data)

    async def _update(self, *, author_id: Source, activity_id: int) -> None:
        """``event: update`` (an edit): the activity as a feed item with its current body, to
        every stream that hears its author (followers not hiding them, the author), which
        received it or would have; once per edit. Not replayed: a reconnect's catch-up sends
        current bodies."""
        streams = self.by_author.get(author_id)
        if not streams:
            return
        body = await self._body(activity_id)
        if body is None:  # deleted meanwhile: nothing to show
            return
        data = event(single_item(body), b"update")
        for stream in list(streams):
            stream.push(data)

    async def _notify(
        self, *, user_id: int, activity_id: int, hidden: Iterable[int] | None = None
    ) -> None:
        """``event: notification`` to the user's open streams: the activity as a notification
        item of its own, not seen, not read. ``hidden``: a replay's (the muted actors, whose
        notifications are stored but never announced)."""
        streams = self.by_user.get(user_id)
        if hidden is not None:
            streams = {s for s in streams or () if activity_id > s.floor}
        if not streams:
            return
        body = await self._body(activity_id)
        if body is None or (hidden is not None and body["actor"]["id"] in hidden):
            return
        data = event({**single_item(body), "seen": False, "read": False}, b"notification")
        for stream in list(streams):
            stream.offer(-activity_id, data)  # its own once-only key: a feed event may share the id


def _missed(
    author_ids: list[int], user_ids: list[int], floor: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], dict[int, frozenset[int]]]:
    """What the gateway's channels may have carried above ``floor``, oldest first: (activity
    id, author id) from the authors' timelines, (activity id, user id) from the users'
    notification feeds (built first if Redis lost them), and each user's hidden authors."""
    top = store.read_streams(
        [store.timeline_key(a) for a in author_ids], max_id=None, min_id=floor + 1, count=REPLAY_MAX
    )
    activities = sorted((i, a) for a, ids in zip(author_ids, top, strict=True) for i in ids)
    for user_id in user_ids:
        notifications_ensure(user_id=user_id)
    top = store.read_streams(
        [store.notif_key(u) for u in user_ids], max_id=None, min_id=floor + 1, count=REPLAY_MAX
    )
    notified = sorted((i, u) for u, ids in zip(user_ids, top, strict=True) for i in ids)
    return activities, notified, {u: hidden_authors(u) for u in {u for _, u in notified}}


async def _revoked(r: Any, credentials: dict[tuple[str, str], int]) -> set[tuple[str, str]]:
    """Which of these credentials (each with the user it authenticated at connect) no longer
    authenticate that user, decided as a connect decides: the token cache entry when it
    confirms or refuses, otherwise PostgreSQL. Fails open: a credential whose check cannot be
    made (Redis or PostgreSQL unavailable) is not revoked, and the next pass checks it again;
    ending every stream of a process on a store blip would send all of its clients
    reconnecting at once into the same outage."""
    tokens = [(key, uid) for (kind, key), uid in credentials.items() if kind == "token"]
    unsure = {c: uid for c, uid in credentials.items() if c[0] == "session"}
    revoked: set[tuple[str, str]] = set()
    try:
        entries = await token_entries(r, [token_digest(key) for key, _ in tokens])
    except store.STORE_ERRORS as exc:
        if not store.store_unavailable(exc):
            raise
        log.warning("stream re-check: Redis unavailable; every stream kept (%s)", exc)
        tokens, entries = [], []  # fail open: no token is checked this pass
    for (key, uid), raw in zip(tokens, entries, strict=True):
        fields = entry_fields(raw)
        if fields is None:  # no entry, or a revocation's tombstone: the database answers
            unsure[("token", key)] = uid
        elif fields["id"] != uid or not fields.get("is_active"):
            revoked.add(("token", key))
    if unsure:
        revoked |= await _with_db_returned(_revoked_in_db)(unsure)
    return revoked


def _revoked_in_db(credentials: dict[tuple[str, str], int]) -> set[tuple[str, str]]:
    """The credentials that no longer authenticate their user, each looked up as at connect
    (a token: feedsite.api.auth, one query, which refills the cache; a session: its store)."""
    revoked = set()
    for (kind, key), user_id in credentials.items():
        try:
            if kind == "token":
                valid = token_still_valid(key, user_id)
            else:
                user = _session_user(key)
                valid = user is not None and user.is_active and user.pk == user_id
        except DatabaseError:
            log.warning("stream re-check: database unavailable; stream kept", exc_info=True)
            continue  # fail open, as above
        except store.STORE_ERRORS as exc:
            if not store.store_unavailable(exc):
                raise
            continue  # fail open, as above
        if not valid:
            revoked.add((kind, key))
    return revoked


_gateway: Gateway | None = None


def gateway() -> Gateway:
    global _gateway
    if _gateway is None:
        _gateway = Gateway()
    return _gateway


# --- the ASGI application ---------------------------------------------------------------------


async def _answer(send: Send, status: int, body: dict, headers: Iterable[tuple[str, str]] = ()):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"x-content-type-options", b"nosniff"),
                *((k.encode(), v.encode()) for k, v in headers),
            ],
        }
    )
    await send({"type": "http.response.body", "body": orjson.dumps(body)})


def client_of(scope: dict[str, Any], headers: dict[bytes, bytes]) -> str:
    """The client's address as Django's middleware sees it (feedsite.middleware): the peer, or
    behind a trusted proxy (Caddy on the Unix socket) the forwarded client."""
    client = scope.get("client")
    meta = {"REMOTE_ADDR": client[0] if client else ""}
    if forwarded := headers.get(b"x-forwarded-for"):
        meta["HTTP_X_FORWARDED_FOR"] = forwarded.decode("latin-1")
    apply_proxy_headers(meta)
    return meta["REMOTE_ADDR"]


Listened = tuple[set[Source], frozenset[int]]  # what a stream hears, the authors it hides


async def _caller(
    gw: Gateway, headers: dict[bytes, bytes], address: str
) -> tuple[Any, tuple[str, str] | None, Listened | None]:
    """(user, credential, what its stream hears: feeds.followees) of the request. A Token header read as knox reads
    it: when the token carries its user id, one Redis round trip reads its cache entry with that
    user's followee and hidden lists (feeds.store.live.connect_reads), and a confirmed entry
    with both lists cached answers without a thread or a query; anything else (no entry, a
    tombstone of a revoked token, a list not cached, Redis unavailable) goes to the pool's
    threads, many at a time: header_user (a failure counts against ``address``, and past its
    limit Throttled is raised before any query) and the lists from PostgreSQL. Without a Token
    header, the session cookie. (None, None, None) when nothing authenticates."""
    meta = {"HTTP_AUTHORIZATION": headers.get(b"authorization", b"").decode("latin-1")}
    key: str | None
    try:
        key = token_from_header(meta)
    except exceptions.AuthenticationFailed:
        key = ""  # malformed: header_user counts it
    claimed = claimed_user_id(key) if key else None
    if key and claimed is not None:
        try:
            raw, followees_raw, hidden_raw = await connect_reads(
                gw.redis, token_digest(key), claimed
            )
        except store.STORE_ERRORS as exc:
            if not store.store_unavailable(exc):
                raise
        else:
            user = entry_user(raw, claimed)
            if user is not None:
                followees, version = followees_from_cache(followees_raw)
                hidden = store.hidden_from_cache(hidden_raw)
                if followees is not None and hidden is not None:
                    return user, ("token", key), (listened(user.pk, followees, hidden), hidden)
                heard = await _with_db_returned(listened_load)(user.pk, followees, version, hidden)
                return user, ("token", key), heard
    if key is not None:  # a Token header (authenticating or not): no session is looked at
        key, user = await _with_db_returned(header_user)(meta, address)
        return user, (("token", key) if user is not None and key else None), None
    cookie = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
    morsel = cookie.get(settings.SESSION_COOKIE_NAME)
    if morsel is not None and morsel.value:
        user = await _with_db_returned(_session_user)(morsel.value)
        return user, ("session", morsel.value), None
    return None, None, None


async def _listened(gw: Gateway, user_id: int) -> Listened:
    """What a stream of ``user_id`` hears, and the authors it hides, from the caches (one round
    trip), what they miss from PostgreSQL on the pool's threads."""
    try:
        _, followees_raw, hidden_raw = await connect_reads(gw.redis, None, user_id)
    except store.STORE_ERRORS as exc:
        if not store.store_unavailable(exc):
            raise
        followees, version, hidden = None, 0, None
    else:
        followees, version = followees_from_cache(followees_raw)
        hidden = store.hidden_from_cache(hidden_raw)
    if followees is not None and hidden is not None:
        return listened(user_id, followees, hidden), hidden
    return await _with_db_returned(listened_load)(user_id, followees, version, hidden)


async def _hidden_now(gw: Gateway, user_id: int) -> frozenset[int]:
    """The user's hidden authors: the cached list, else PostgreSQL (and cached)."""
    try:
        hidden = store.hidden_from_cache(await gw.redis.get(hidden_key(user_id)))
    except store.STORE_ERRORS as exc:
        if not store.store_unavailable(exc):
            raise
        hidden = None
    if hidden is None:
        hidden = await _with_db_returned(hidden_authors)(user_id)
    return hidden


async def application(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["method"] != "GET":
        await _answer(send, 405, {"detail": f'Method "{scope["method"]}" not allowed.'})
        return
    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"").decode("latin-1")
    if not validate_host(split_domain_port(host)[0], settings.ALLOWED_HOSTS):
        await _answer(send, 400, {"detail": f"Invalid HTTP_HOST header: {host!r}."})
        return
    gw = gateway()
    if not gw.reserve():  # before any await: see Gateway.reserve
        busy = [("retry-after", str(settings.FEEDSITE_SSE_HEARTBEAT_SECONDS))]
        await _answer(send, 503, {"detail": "this server holds all the streams it can"}, busy)
        return
    try:
        await _serve(gw, scope, headers, receive, send)
    finally:
        gw.release()


async def _serve(
    gw: Gateway, scope: dict[str, Any], headers: dict[bytes, bytes], receive: Receive, send: Send
) -> None:
    """A stream, its process slot already taken: authenticate, register, stream."""
    heartbeat = settings.FEEDSITE_SSE_HEARTBEAT_SECONDS
    busy = [("retry-after", str(heartbeat))]
    try:
        user, credential, heard = await _caller(gw, headers, client_of(scope, headers))
    except exceptions.Throttled as exc:  # this address failed too often: no query made
        wait = str(max(1, int(getattr(exc, "wait", None) or 1)))
        await _answer(send, 429, {"detail": str(exc.detail)}, [("retry-after", wait)])
        return
    if user is None or not user.is_active:
        await _answer(send, 401, {"detail": "Authentication credentials were not provided."})
        return
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    raw_last = (
        headers.get(b"last-event-id", b"").decode("latin-1")
        or (query.get("last_event_id", [""])[0])
    )
    try:
        last_event_id = int(raw_last) if raw_last else None
    except ValueError:
        await _answer(send, 400, {"Last-Event-ID": ["must be an activity id"]})
        return
    stream_id = uuid.uuid4().hex[:16]  # its registry entry and its name in the ledger
    try:
        live = await store.stream_register(gw.redis, user.pk, stream_id, time.time(), 3 * heartbeat)
    except store.STORE_ERRORS as exc:
        if not store.store_unavailable(exc):
            raise  # a bug: the ASGI server's logged 500
        log.warning("stream refused: Redis unavailable", exc_info=True)
        await _answer(send, 503, {"detail": "streams are unavailable; retry shortly"}, busy)
        return
    if live > settings.FEEDSITE_SSE_MAX_STREAMS:
        await store.stream_unregister(gw.redis, user.pk, stream_id)
        await _answer(
            send,
            429,
            {"detail": f"at most {settings.FEEDSITE_SSE_MAX_STREAMS} open streams per user"},
            busy,
        )
        return
    floor = last_event_id if last_event_id is not None else _id_at(time.time())
    stream = Stream(user.pk, set(), settings.FEEDSITE_SSE_QUEUE, floor, credential, stream_id)
    try:
        stream.authors, stream.hidden = heard if heard is not None else await _listened(gw, user.pk)
        await gw.add(stream)
        try:
            tasks = {
                asyncio.create_task(_write(stream, last_event_id, send)),
                asyncio.create_task(_keep_registered(stream, stream_id)),
                asyncio.create_task(_disconnected(receive)),
            }
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await gw.remove(stream)
    finally:
        await store.stream_unregister(gw.redis, user.pk, stream_id)


async def _keep_registered(stream: Stream, stream_id: str) -> None:
    """Refresh the stream in the user's registry every heartbeat, busy or idle (a stream not
    refreshed for three heartbeats no longer counts against the per-user limit)."""
    heartbeat = settings.FEEDSITE_SSE_HEARTBEAT_SECONDS
    while True:
        await asyncio.sleep(heartbeat)
        try:
            await store.stream_register(
                gateway().redis, stream.user_id, stream_id, time.time(), 3 * heartbeat
            )
        except store.STORE_ERRORS as exc:
            # The open stream goes on either way (its registry entry is only the per-user
            # stream count); a bug is logged as an error, not as an outage.
            if store.store_unavailable(exc):
                log.warning("stream registry refresh failed: Redis unavailable", exc_info=True)
            else:
                log.error("stream registry refresh failed", exc_info=True)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _Stalled(Exception):
    """The client took no byte for FEEDSITE_SSE_WRITE_TIMEOUT_SECONDS."""


def _abort(send: Send) -> None:
    """Close the client's connection now, its unsent bytes discarded: a graceful close waits
    for the client to take what is buffered, which a stalled client never does (the socket
    and up to 64 KiB of buffer per stream would stay). uvicorn's ``send`` is a method of its
    request cycle, which holds the transport; under another server the app just returns."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        transport.abort()


class LedgerWriter:
    """The process's ledger writes (feeds.replay), coalesced: every stream writing in the same
    turn of the event loop (an activity handed to a thousand streams wakes a thousand writers
    at once) waits for one pipelined round trip, not one each through the pool."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, dict[str, int], int | None, asyncio.Future[None]]] = []
        self.flushing: asyncio.Task | None = None

    async def note(self, user_id: int, notes: dict[str, int], trim_below: int | None) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((user_id, notes, trim_below, done))
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the other writers woken by the same message join first
        while self.pending:
            batch, self.pending = self.pending[:1_000], self.pending[1_000:]
            try:
                writes = [(u, notes, below) for u, notes, below, _ in batch]
                await ledger_note(gateway().redis, writes, TRIM_MEMBER, LEDGER_TTL_SECONDS)
            except Exception as exc:  # noqa: BLE001 - each writer decides (_note)
                for *_, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for *_, done in batch:
                    if not done.done():
                        done.set_result(None)


async def _note(stream: Stream, notes: dict[str, int]) -> None:
    """Write ``notes`` (and, the first time, the stream's floor and what the feed held when it
    opened) into the user's ledger before the events they describe are sent. Fails open: a
    stream whose sends cannot be written down goes on (a reconnect then replays them again
    or, knowing none, takes its id at its word); ending it would send its client into the
    same outage."""
    if not stream.noted:
        known = {known_member(stream.tag, a): a for a in stream.known}
        notes = {floor_member(stream.tag): stream.owed, **known, **notes}
    # The trim (and the ledger's lifetime) at the first write and then once a minute at most:
    # between them a write is one ZADD (the ledger holds a minute more of entries, no less).
    below = None
    now = time.monotonic()
    if not stream.noted or now - stream.trimmed_at > LEDGER_TRIM_SECONDS:
        top = stream.high if stream.high is not None else stream.owed
        below = ledger_trim_below(top)
    try:
        await gateway().ledger.note(stream.user_id, notes, below)
        stream.noted = True
        if below is not None:
            stream.trimmed_at = now
    except store.STORE_ERRORS as exc:
        if not store.store_unavailable(exc):
            raise
        log.warning("stream ledger not written: Redis unavailable (%s)", exc)


async def _send(
    stream: Stream,
    batch: Sequence[tuple[int | None, bytes]],
    chunk: Callable[[bytes], Awaitable[None]],
) -> None:
    """Write a batch of events: into the ledger first (what it sends), then to the client."""
    data, notes = stream.stamp(batch)
    if notes or not stream.noted:
        await _note(stream, notes)
    await chunk(data)


async def _opening(stream: Stream) -> None:
    """A new stream (no Last-Event-ID), subscribed already: what the reader's feed holds from
    LAG before its opening is not owed, all the rest is (feeds.replay.opening_snapshot).
    Fails open: unreadable, it is owed what was made after it opened (the gateway's floor)."""
    try:
        stream.owed, stream.known = await _with_db_returned(opening_snapshot)(
            user_id=stream.user_id, opened=stream.floor
        )
    except store.STORE_ERRORS as exc:
        if not store.store_unavailable(exc):
            raise
        log.warning("stream opening snapshot not read: Redis unavailable (%s)", exc)
    except DatabaseError:  # a feed rebuilt or a pull-author list read on the way
        log.warning("stream opening snapshot not read: database unavailable", exc_info=True)


async def _catch_up(
    stream: Stream, last_id: int, chunk: Callable[[bytes], Awaitable[None]]
) -> None:
    """A reconnect's catch-up (feeds.replay): what the stream that sent ``last_id`` had sent,
    from the ledger; the plan; the replay from the feed; the stream takes the place of the one
    it replaces in the ledger (its floor, what that one sent), then sends the replay, oldest
    first, or `event: reset`."""
    async with _catch_up_slots():  # the reads only: a client slow to take it holds no slot
        ledger, open_tags = await ledger_read(gateway().redis, stream.user_id, last_id - LAG_IDS)
        plan = plan_catch_up(last_id=last_id, ledger=ledger, open_tags=open_tags)
        replay: Replay = await _with_db_returned(feed_replay)(
            user_id=stream.user_id, floor=plan.floor, skip=plan.skip
        )
    notes = takeover_notes(stream.tag, plan, last_id, _id_at(time.time()), reset_to=replay.reset_to)
    if replay.reset_to is not None:
        newest = replay.reset_to
        stream.floor = stream.owed = stream.high = newest  # the reloaded feed holds them
        await _note(stream, notes)
        detail = orjson.dumps({"id": str(newest), "detail": RESET})
        await chunk(b"id: %d\nevent: reset\ndata: %s\n\n" % (newest, detail))
        return
    stream.floor = stream.owed = plan.floor
    stream.high = last_id
    stream.sent |= plan.skip
    await _note(stream, notes)
    missed = []
    for item in replay.items:
        aid = int(item["id"])
        if aid not in stream.sent:  # arrived live meanwhile: queued already
            stream.sent.add(aid)
            missed.append((aid, event(item)))
    for start in range(0, len(missed), WRITE_BATCH):
        await _send(stream, missed[start : start + WRITE_BATCH], chunk)


async def _write(stream: Stream, last_event_id: int | None, send: Send) -> None:
    """The response: headers, the replay after Last-Event-ID, then events and heartbeats until
    the stream is dropped (a final `dropped` or `revoked` event) or the client stalls."""
    heartbeat = settings.FEEDSITE_SSE_HEARTBEAT_SECONDS
    stall = settings.FEEDSITE_SSE_WRITE_TIMEOUT_SECONDS

    async def out(message: dict[str, Any]) -> None:
        # The ASGI server's send waits while its write buffer is over the high-water mark
        # (uvicorn: 64 KiB, flow control on the transport's pause_writing/resume_writing):
        # that is, while the client (or the proxy, whose own buffers are full behind it)
        # takes nothing. Waiting longer than ``stall`` ends the stream.
        try:
            async with asyncio.timeout(stall):
                await send(message)
        except TimeoutError:
            raise _Stalled from None

    async def chunk(data: bytes) -> None:
        await out({"type": "http.response.body", "body": data, "more_body": True})

    try:
        await out(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                    (b"x-content-type-options", b"nosniff"),
                ],
            }
        )
        await chunk(b"retry: 3000\n\n")
        # Connects first: a storm's catch-ups and opening snapshots wait for a slot to read.
        if last_event_id is not None:
            await _catch_up(stream, last_event_id, chunk)
        else:
            async with _catch_up_slots():
                await _opening(stream)
        while True:
            try:
                queued = await asyncio.wait_for(stream.queue.get(), timeout=heartbeat)
            except TimeoutError:
                await chunk(b": heartbeat\n\n")
                continue
            batch = [queued]
            while queued is not None and len(batch) < WRITE_BATCH and not stream.queue.empty():
                queued = stream.queue.get_nowait()
                batch.append(queued)
            # None: the reader fell too far behind, the gateway could not replay, or the
            # credentials were revoked (dropped: whatever is still queued is not sent).
            if queued is None or stream.dropped:
                why = orjson.dumps({"detail": (stream.dropped or TOO_SLOW).decode()})
                await chunk(b"event: %s\ndata: %s\n\n" % (stream.ending, why))
                await out({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await _send(stream, [q for q in batch if q is not None], chunk)
    except _Stalled:
        log.info("stream dropped: its client took nothing for %d s", stall)
        stream.drop(TOO_SLOW)  # no more offers to it
        _abort(send)
