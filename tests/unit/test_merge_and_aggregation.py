"""Property tests of the pure read parts: merge, aggregation, page cutting (no Django, no Redis)."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from activities.ids import LOW_BITS
from feeds.aggregation import Entry, bucket_floor_id, bucket_of, cut_page
from feeds.merge import merge_streams

WINDOW_MS = 1000


@given(st.lists(st.lists(st.integers(0, 500), max_size=30), max_size=5))
def test_merge_is_sorted_newest_first_and_deduplicated(streams):
    streams = [sorted(set(s), reverse=True) for s in streams]
    merged = merge_streams(streams)
    assert merged == sorted({i for s in streams for i in s}, reverse=True)


def entry_strategy():
    # Many equal milliseconds (ms from a small range) and few verbs/objects: groups and ties abound.
    return st.builds(
        lambda ms, low, verb, obj, actor: (ms << LOW_BITS | low, verb, obj, actor),
        st.integers(0, 4000),
        st.integers(0, 1023),
        st.sampled_from(["starred", "liked"]),
        st.sampled_from(["p1", "p2", "p3"]),
        st.integers(1, 6),
    )


def to_entries(raw):
    unique = {}
    for aid, verb, obj, actor in raw:
        unique[aid] = Entry(aid, (verb, "project", obj, bucket_of(aid, WINDOW_MS)), actor)
    return [unique[i] for i in sorted(unique, reverse=True)]


def read_page(entries, limit, cursor):
    """The read algorithm of feeds/read.py over an in-memory feed."""
    top, last = cursor if cursor else (entries[0].id if entries else 0, None)
    visible = [e for e in entries if e.id <= top]
    exclude = frozenset()
    if last is not None:
        floor = max(last, bucket_floor_id(last, WINDOW_MS))
        exclude = frozenset(e.key for e in visible if floor <= e.id)
        visible = [e for e in visible if e.id < last]
    cut = cut_page(visible, limit=limit, window_ms=WINDOW_MS, exclude_keys=exclude, exhausted=True)
    nxt = (top, cut.groups[-1][0].id) if cut.has_more and cut.groups else None
    return cut.groups, nxt


@settings(max_examples=500, deadline=None)
@given(
    st.lists(entry_strategy(), max_size=60),
    st.lists(entry_strategy(), max_size=10),
    st.integers(1, 100),
    st.integers(1, 8),
)
def test_paging_shows_every_entry_once_in_whole_groups_even_while_writing(
    raw, arriving, limit, small
):
    limit = min(limit, small) if limit > 8 else limit  # small limits exercise many pages
    entries = to_entries(raw)
    snapshot = list(entries)
    shown, cursor, pages = [], None, 0
    while True:
        groups, cursor = read_page(entries, limit, cursor)
        assert len(groups) <= limit
        shown.extend(groups)
        pages += 1
        # New arrivals between pages (newer ids) must not leak into this paging run.
        if arriving and pages == 1:
            newest = snapshot[0].id if snapshot else 0
            entries = to_entries(
                raw + [(newest + 1 + i, *rest[1:]) for i, rest in enumerate(arriving)]
            )
        if cursor is None:
            break
    members = [e.id for g in shown for e in g]
    assert sorted(members, reverse=True) == [e.id for e in snapshot]  # each exactly once
    by_key = defaultdict(list)
    for e in snapshot:
        by_key[e.key].append(e.id)
    for group in shown:
        assert len({e.key for e in group}) == 1
        assert [e.id for e in group] == by_key[group[0].key]  # the whole group, newest first
    newest_members = [g[0].id for g in shown]
    assert newest_members == sorted(newest_members, reverse=True)


def test_cut_page_asks_for_more_until_the_last_group_is_complete():
    p1 = ("starred", "project", "p1", 1)
    a = Entry(5000 << LOW_BITS, ("liked", "project", "p2", 5), 3)
    b, c = Entry(1010 << LOW_BITS, p1, 1), Entry(1009 << LOW_BITS, p1, 2)
    d = Entry(1001 << LOW_BITS, ("x", "y", "z", 1), 4)
    # After [a, b] with limit 2 the p1 group could still grow below: not decided yet.
    assert cut_page([a, b], limit=2, window_ms=WINDOW_MS, exhausted=False) is None
    cut = cut_page([a, b, c], limit=2, window_ms=WINDOW_MS, exhausted=True)
    assert cut.groups == [[a], [b, c]] and cut.has_more is False
    cut = cut_page([a, b, c, d], limit=2, window_ms=WINDOW_MS, exhausted=True)
    assert cut.groups == [[a], [b, c]] and cut.has_more is True
    older = Entry(10 << LOW_BITS, ("x", "y", "z", 0), 5)  # an older bucket ends the page at once
    cut = cut_page([a, b, c, older], limit=2, window_ms=WINDOW_MS, exhausted=False)
    assert cut.groups == [[a], [b, c]] and cut.has_more is True
