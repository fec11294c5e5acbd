"""The key layout's pure parts: feed members in newest-first lex encoding, virtual shards, shard
order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from feeds.store.keys import (
    ID_WIDTH,
    MAX_ID,
    SENTINEL,
    decode_id,
    encode_id,
    lex_start,
    lex_stop,
    shard_tag,
)
from feedsite.shards import ORDER_SHIFT, VSHARDS, shard_order, vshard

ids = st.integers(min_value=0, max_value=MAX_ID)


@given(ids, ids)
def test_member_bytes_order_newest_first_and_round_trip(a, b):
    ea, eb = encode_id(a), encode_id(b)
    assert len(ea) == len(eb) == ID_WIDTH
    assert (ea < eb) == (a > b) and (ea == eb) == (a == b)  # a newer id sorts first
    assert decode_id(ea) == a and decode_id(eb) == b
    assert SENTINEL.encode() > ea  # the built marker sorts after every id: trimmed first


def test_ids_outside_53_bits_are_refused():
    for bad in (-1, MAX_ID + 1):
        try:
            encode_id(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was encoded")


@given(ids)
def test_lex_bounds_include_the_bound_and_never_the_marker(a):
    assert lex_start(a) == b"[" + encode_id(a)
    assert lex_start(None) == b"-"
    assert lex_stop(None) == lex_stop(0) == lex_stop(-7) == b"(" + SENTINEL.encode()
    assert lex_stop(a or 1) == b"[" + encode_id(a or 1)
    # Cursors beyond the id range clamp instead of failing.
    assert lex_start(MAX_ID * 4) == b"[" + encode_id(MAX_ID)
    assert lex_start(-5) == b"[" + encode_id(0)


@given(st.integers(min_value=1, max_value=ORDER_SHIFT - 1), st.integers(1, ORDER_SHIFT - 1))
def test_shard_order_groups_by_shard_then_id(a, b):
    assert vshard(a) == a % VSHARDS
    if vshard(a) != vshard(b):
        assert (shard_order(a) < shard_order(b)) == (vshard(a) < vshard(b))
    else:
        assert (shard_order(a) < shard_order(b)) == (a < b)
    assert shard_tag(a) == f"{{s{vshard(a)}}}"
