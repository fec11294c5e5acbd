"""Stream catch-up: what a stream reconnecting with ``Last-Event-ID`` owes its client, each
activity once, oldest first, with its current body (feeds.stream sends it).

Why the id alone cannot say it. Activities reach a stream out of id order: an id is made when
the activity is written, the announcement goes out when its fan-out job starts, and concurrent
publishers (or a job held up by a busy worker or a paused broker) swap the two orders. Every
event's ``id:`` is the stream's high-water activity id (the largest it sent; an older arrival
carries it unchanged, never lowering it). A client's Last-Event-ID ``h`` thus says "I took
``h`` and every event sent before it"; it cannot say which older activities were still on
their way when it dropped. "Everything above ``h``" loses those; "everything above ``h`` less
a margin" sends again the ones that had arrived.

The ledger. So a stream writes down, before sending them, the feed activities it sends: one
sorted set per user (store.live.ledger_note), member ``<stream>:<activity id>`` scored by the id
its event carried; ``<stream>:f`` scored by the stream's floor; ``<stream>:k<id>`` scored by
the id, an activity the stream is not owed; ``<stream>:r`` once a reconnect took its place. A
stream is owed every feed activity that was not in the reader's feed when it first opened: its
floor is LAG before that moment and what the feed held above it then (opening_snapshot) is
known. A reconnect with ``h`` looks for the streams of the user that sent an event carrying
``h`` (the candidates) and counts as delivered what each sent up to it (score <= h: the client
that took ``h`` took every event before it, TCP keeps their order); it then takes their place:
their floor, and what its client has, known to it (takeover_notes).

Why a ledger, not ids that say more. The issue's contract has every ``id:`` be the high-water
activity id, a plain id that clients and tests compare with activity ids. What a client has
below it is a set (a few hundred ids in 5 busy minutes): too long for an ``id:`` line sent
with every event and echoed in a header. So the id names a point in the stream, and the set
stays in Redis, where any process serving the reconnect reads it. Cost: one pipelined write
per turn of the event loop for all the streams of a process that sent something
(feeds.stream.LedgerWriter), one read of the feed's last 5 minutes when a stream opens, two
reads when one reconnects.

The window. How far below ``h`` can an owed activity be? An activity is announced within
LAG_SECONDS (5 minutes) of its id's moment: the bound the gateway's replay after a lost
subscription assumes (feeds.stream.REPLAY_MARGIN_SECONDS), covering a paused broker or a job
re-enqueued by the sweeper. ``h`` was made before it was sent, so an activity still on its
way when the client dropped has an id above ``h - LAG``. The replay reads the feed above
``max(h - LAG, floor)`` and leaves out what the candidates sent: exactly what was not
delivered. Each write trims the ledger below its stream's id less 2 x LAG and an hour of
slack (ledger_trim_below): a stream the server has not yet found dead (TCP gives up after
some 15 minutes) goes on writing past its client's last id, and the client still needs what
lies within LAG below it. The ledger records the highest threshold it was trimmed at
(member ``~``); a reconnect whose id is too old for what is left is taken at its word.

What it does not promise, and why:
- An activity announced more than LAG after its id's moment (a post backdated by more than 5
  minutes through ``time``, a fan-out stalled that long) is sent live if the stream is open,
  and is not replayed if it arrived while the client was away (the feed shows it in place).
- A late event (one that did not raise the id) carries the same id as the event before it,
  so a client that dropped after its ``h`` but before taking a late event sent after it
  cannot be told from one that took it; the ledger counts it delivered (the stream skips only
  what it sent). Exact for every client that took what was sent with its id.
- Several streams of one user (tabs) share ids. A reconnect then prefers the candidates no
  longer open; when more than one is left, an activity counts as delivered only if every one
  of them sent it (or was not owed it): nothing is lost, an activity may come twice.
- An id the ledger does not know (a day without a stream of the user, an id from elsewhere)
  is taken at its word: everything above it, as before the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from activities.ids import LOW_BITS

from . import store
from .conf import get_conf
from .hydrate import hydrate
from .merge import merge_streams
from .read import feed_read_open, hidden_authors, single_item
from .selectors import home_activities_page

# Announcements come within this many seconds of their activity's id (see the docstring).
LAG_SECONDS = 300
LAG_IDS = (LAG_SECONDS * 1000) << LOW_BITS  # the same span in ids (milliseconds << 10)
# More missed than this: `event: reset` (the client reloads the feed) instead of a replay.
REPLAY_BOUND = 1_000
# A ledger untouched for a day goes: a reconnect after that takes its id at its word.
LEDGER_TTL_SECONDS = 86_400
# Kept below a stream's id beyond the 2 x LAG a reconnect reads: how far past its client's last
# id a stream the server does not yet know dead may go on writing.
LEDGER_SLACK_SECONDS = 3_600
SLACK_IDS = (LEDGER_SLACK_SECONDS * 1000) << LOW_BITS
TRIM_MEMBER = "~"  # scored by the highest threshold the ledger was trimmed at
# An edge above every id (nothing held in Redis counts): the page read's own.
EVERYTHING = store.EDGE_ALL


# --- the ledger's members (pure) -----------------------------------------------------------


def sent_member(tag: str, activity_id: int) -> str:
    """The ledger member for "stream ``tag`` sent ``activity_id``" (scored by its event's id)."""
    return f"{tag}:{activity_id}"


def known_member(tag: str, activity_id: int) -> str:
    """The ledger member for "the feed held ``activity_id`` when stream ``tag`` opened" (scored
    by the id: read whenever it lies in a reconnect's window)."""
    return f"{tag}:k{activity_id}"


def floor_member(tag: str) -> str:
    """The ledger member scored by stream ``tag``'s floor."""
    return f"{tag}:f"


def retired_member(tag: str) -> str:
    """The ledger member saying a reconnect took stream ``tag``'s place."""
    return f"{tag}:r"


def ledger_trim_below(high: int, lag_ids: int = LAG_IDS, slack_ids: int = SLACK_IDS) -> int:
    """Below which score a stream whose id is ``high`` trims the ledger as it writes. Pure."""
    return high - 2 * lag_ids - slack_ids


@dataclass(frozen=True)
class CatchUpPlan:
    """What a reconnect owes: the feed's activities above ``floor`` but those in ``skip`` (sent
    before); ``retire``: the stream it replaces, to be marked retired (None: none, or not sure
    which)."""

    floor: int
    skip: frozenset[int] = frozenset()
    retire: str | None = None


def plan_catch_up(
    *,
    last_id: int,
    ledger: Iterable[tuple[str, int]],
    open_tags: Iterable[str] = (),
    lag_ids: int = LAG_IDS,
) -> CatchUpPlan:
    """The catch-up of a client that took ``last_id``, from the ledger entries scored from
    ``last_id - lag_ids`` up and the streams of the user still open. Pure.

    Candidates: the streams (not retired) that sent an event carrying ``last_id``; the closed
    ones if any (an open one is another tab), all of them otherwise. The floor: the window's
    (``last_id - lag_ids``) or, above it, the lowest candidate floor. An id above the floor is
    skipped when every candidate sent it with an event id up to ``last_id`` or is not owed it
    (at or below its own floor, or in the feed when it opened). No candidate: everything above ``last_id``; a ledger trimmed
    above the window (it may have lost what the candidates sent there): everything above
    ``last_id`` and the candidates' floor."""
    sent: dict[str, dict[int, int]] = {}
    known: dict[str, set[int]] = {}
    floors: dict[str, int] = {}
    retired: set[str] = set()
    trimmed = False
    for member, score in ledger:
        tag, _, what = member.rpartition(":")
        if member == TRIM_MEMBER:
            trimmed = score > last_id - lag_ids
        elif what == "f":
            floors[tag] = score
        elif what == "r":
            retired.add(tag)
        elif what.isdigit():
            sent.setdefault(tag, {})[int(what)] = score
        elif what[:1] == "k" and what[1:].isdigit():
            known.setdefault(tag, set()).add(int(what[1:]))
    candidates = {
        tag for tag, ids in sent.items() if tag not in retired and last_id in ids.values()
    }
    if not candidates:
        return CatchUpPlan(floor=last_id)
    closed = candidates - set(open_tags)
    chosen = sorted(closed or candidates)
    retire = chosen[0] if len(chosen) == 1 and closed else None
    if trimmed:  # what they sent within the window may be gone: above the id, and their floor
        floor = max(last_id, min(floors.get(t, last_id) for t in chosen))
        return CatchUpPlan(floor=floor, retire=retire)
    window = last_id - lag_ids
    own = {tag: floors.get(tag, window) for tag in chosen}  # not read: below the window
    floor = max(window, min(own.values()))

    def done(tag: str, aid: int) -> bool:  # sent by its client's id, or never owed
        return (
            aid <= own[tag]
            or sent[tag].get(aid, last_id + 1) <= last_id
            or aid in known.get(tag, ())
        )

    seen = {a for t in chosen for a in (*sent[t], *known.get(t, ()))}
    skip = frozenset(a for a in seen if a > floor and all(done(t, a) for t in chosen))
    return CatchUpPlan(floor=floor, skip=skip, retire=retire)


def takeover_notes(
    tag: str, plan: CatchUpPlan, last_id: int, retired_at: int, reset_to: int | None = None
) -> dict[str, int]:
    """The ledger entries of stream ``tag`` taking the place of the one its client reconnected
    from, before it sends anything: its floor; what the client has (``plan.skip``: sent by the
    predecessor, or in the feed when the first stream opened) as known to it; ``last_id`` as
    sent by it, so that a reconnect with that id finds it; the predecessor retired
    (``retired_at``: an id of now). After a reset, the floor and the only entry are the
    feed's newest id. Pure."""
    if reset_to is not None:
        notes = {floor_member(tag): reset_to, sent_member(tag, reset_to): reset_to}
    else:
        notes = {known_member(tag, a): a for a in plan.skip}
        notes[sent_member(tag, last_id)] = last_id
        notes[floor_member(tag)] = plan.floor
    if plan.retire is not None:
        notes[retired_member(plan.retire)] = retired_at
    return notes


def opening_snapshot(*, user_id: int, opened: int) -> tuple[int, list[int]]:
    """A new stream's floor and what it is not owed above it: the reader's feed (its Redis
    sources, as the read merges them) from LAG before ``opened`` (the id of the moment it
    opened). An activity made before the stream opened and announced after it (a concurrent
    publisher, a delayed fan-out) is owed; one the page loaded before is not. At most
    REPLAY_BOUND ids: a feed holding more than that in LAG starts the floor at its oldest."""
    floor = opened - LAG_IDS
    keys = feed_read_open(user_id, get_conf())
    reads = store.read_streams(keys, max_id=None, min_id=floor + 1, count=REPLAY_BOUND)
    for ids in reads:
        if len(ids) == REPLAY_BOUND:
            floor = max(floor, ids[-1])
    return floor, [i for i in merge_streams(reads) if i > floor]


# --- the replay: the feed above the floor, from Redis then PostgreSQL ----------------------


@dataclass
class Replay:
    """A catch-up's events: ``items`` oldest first, or, past the bound, ``reset_to``: the
    feed's newest id (the client reloads the feed instead)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    reset_to: int | None = None


def redis_edge(
    above: Sequence[Sequence[int]], tails: Sequence[Sequence[bytes]], floor: int, count: int
) -> int | None:
    """Below which id the Redis sources may not hold everything above the floor (None: they do),
    by the page read's rule (store.page.stream_edge). ``above``: each source's ids above the
    floor, newest first, read up to ``count``; ``tails``: each source's last member by rank
    (ZRANGE -1 -1: its oldest id, or the built marker). A source is whole above the floor when
    its oldest id is at or below the floor (feeds and timelines are trimmed at the tail only),
    or when it holds the built marker (its whole history). Otherwise it may miss what lies
    below its oldest id; a capped read, what lies below the last id read; the reader's feed (the
    first source) gone, everything. Pure."""
    edge: int | None = None
    sentinel = store.SENTINEL.encode()
    for i, (ids, tail) in enumerate(zip(above, tails, strict=True)):
        if len(ids) >= count:
            at: int | None = ids[-1]
        elif not tail:
            at = EVERYTHING if i == 0 or not ids else ids[-1]
        elif tail[-1] == sentinel or store.decode_id(tail[-1]) <= floor:
            at = None
        else:
            at = store.decode_id(tail[-1])
        if at is not None and (edge is None or at > edge):
            edge = at
    return edge


def feed_replay(
    *, user_id: int, floor: int, skip: Iterable[int] = (), bound: int = REPLAY_BOUND
) -> Replay:
    """The reader's home-feed activities above ``floor`` but those in ``skip``, oldest first,
    one feed item each with its current body; ``reset_to`` instead when there are more than
    ``bound``. The Redis sources (the feed and the pull authors' timelines, as the feed read
    merges them: feed_read_open) serve what they hold whole (redis_edge), bodies through
    hydrate (a deleted activity is absent); PostgreSQL serves what lies below their edge
    (selectors.home_activities_page: the reader's and their followees' live home activities).
    Authors the reader hides are never replayed. Cost: two pipelined reads of the sources,
    one of bodies, and one query when the sources may not hold all of it (a feed whose follows
    left older activities out, a trimmed one that does not reach down to the floor)."""
    skip = frozenset(skip)
    keys = feed_read_open(user_id, get_conf())
    count = bound + len(skip) + 1  # one more than a replay can hold, whatever is skipped
    above = store.read_streams(keys, max_id=None, min_id=floor + 1, count=count)
    tails = store.round_trip(*(("ZRANGE", key, -1, -1) for key in keys))
    edge = redis_edge(above, tails, floor, count)
    ids = [i for i in merge_streams(above) if (edge is None or i >= edge) and i not in skip]
    bodies = hydrate(ids)
    hidden = hidden_authors(user_id)
    found = {i: bodies[i] for i in ids if i in bodies and bodies[i]["actor"]["id"] not in hidden}
    if edge is not None and edge > floor + 1:
        limit = bound + sum(1 for i in skip if floor < i < edge) + 1
        rows = home_activities_page(user_id=user_id, limit=limit, before_id=edge, min_id=floor + 1)
        for row in rows:
            if row.id not in skip:
                found[row.id] = orjson.loads(row.body)
    if len(found) > bound:
        return Replay(reset_to=max(found))
    return Replay(items=[single_item(found[i]) for i in sorted(found)])
