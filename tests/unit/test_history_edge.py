"""Where the Redis sources of a feed stop holding everything (store.page.stream_edge) and the
bucket bounds a cursor's second look uses: pure."""

from __future__ import annotations

from feeds.aggregation import bucket_ceiling_id, bucket_floor_id, bucket_of
from feeds.store.keys import SENTINEL, encode_id
from feeds.store.page import EDGE_ALL, stream_edge

MARK = SENTINEL.encode()


def test_a_stream_read_to_its_end_is_complete_down_to_its_tail_unless_never_trimmed():
    assert stream_edge([[MARK]], [True]) is None  # built, never trimmed: its whole history
    assert stream_edge([[encode_id(7)]], [True]) == 7  # trimmed (or a backfill left some out)
    assert stream_edge([[]], [True]) == EDGE_ALL  # the reader's feed is gone: nothing held
    feed = [encode_id(2)]
    assert stream_edge([feed, [MARK]], [True, True]) == 2
    assert stream_edge([feed, [encode_id(50)]], [True, True]) == 50  # a trimmed timeline
    assert stream_edge([feed, []], [True, True]) == 2  # a missing timeline is rebuilt


def test_only_streams_read_to_their_end_say_where_they_end():
    assert stream_edge([[encode_id(7)]], [False]) is None
    assert stream_edge([[encode_id(7)], [encode_id(20)]], [False, True]) == 20
    assert stream_edge([None, [encode_id(20)]], [True, True]) == 20


def test_bucket_bounds():
    for aid in (1, 1023, 1024, 5_000_000_123, 2**52 + 17):
        for window in (1000, 3_600_000):
            lo, hi = bucket_floor_id(aid, window), bucket_ceiling_id(aid, window)
            assert lo <= aid <= hi
            assert bucket_of(lo, window) == bucket_of(hi, window) == bucket_of(aid, window)
            assert bucket_of(lo - 1, window) < bucket_of(aid, window) < bucket_of(hi + 1, window)
