"""THE Redis module of feedsite: every key is built here (keys.py holds the layout) and every
Redis command is sent from here; nothing else in the project talks to Redis.

  keys        every key builder, and the layout
  connection  the clients, a raw round trip (hot path), the Lua script runner
  feeds       feeds and timelines, fan-out bookkeeping, pull-author cache, rebuild lock
  page        the warm read: prelude and page (two round trips)
  bodies      activity bodies
  live        pub/sub channels and the open-stream registry
  stats       counters and latency histograms
  throttle    fixed throttle windows
  tokens      the token cache

Every command but one touches a single key, and multi-key work is a non-transactional pipeline,
which redis-py's cluster client splits per node. The exception is the feed read's page script
(page._READ_PAGE_LUA), which reads a reader's sources and their bodies in one call on one
Redis; on Redis Cluster it becomes two parallel rounds (read_page_pipelined: the sources, then
the bodies). Callers use the package (``from feeds import store; store.feed_key(...)``).
"""

from .bodies import body_get_async, delete_body, get_bodies, set_bodies
from .connection import TRANSIENT_ERRORS, async_client, client, ping, round_trip, with_script
from .feeds import (
    add_to_feed,
    add_to_timeline,
    author_mode_swap,
    begin_batch,
    begin_read,
    bump_pull_version,
    bump_unfollow_counter,
    drop_pull_authors,
    feed_ids,
    feed_oldest_id,
    lock_rebuild,
    mark_rebuilding,
    pull_authors_from_cache,
    push_to_feeds,
    read_streams,
    rebuild_locked,
    remove_from_feeds,
    remove_from_timeline,
    set_pull_authors,
    timeline_ids,
    touch_feed,
    unlock_rebuild,
    user_forget,
    write_feed,
    write_timeline,
)
from .keys import (
    SENTINEL,
    author_mode_key,
    body_key,
    body_prefix,
    deliveries_key,
    feed_key,
    follows_channel,
    live_channel,
    parked_key,
    prefix,
    pull_authors_key,
    pull_version_key,
    rebuild_lock_key,
    stats_key,
    streams_key,
    throttle_key,
    timeline_author,
    timeline_key,
    token_key,
    unfollows_key,
)
from .live import (
    LiveSubscription,
    announce,
    announce_follow,
    stream_register,
    stream_unregister,
)
from .page import PageRead, ReadPrelude, read_page, read_page_pipelined, read_prelude
from .stats import (
    LATENCY_BUCKETS_MS,
    count_stat,
    flush_buffered,
    observe,
    observe_buffered,
    read_histogram,
    read_stat,
)
from .throttle import hit_window, window_of
from .tokens import token_delete, token_get, token_set

__all__ = [
    "LiveSubscription",
    "LATENCY_BUCKETS_MS",
    "PageRead",
    "ReadPrelude",
    "SENTINEL",
    "TRANSIENT_ERRORS",
    "add_to_feed",
    "add_to_timeline",
    "author_mode_key",
    "author_mode_swap",
    "announce",
    "announce_follow",
    "body_get_async",
    "follows_channel",
    "async_client",
    "begin_batch",
    "begin_read",
    "body_key",
    "body_prefix",
    "bump_pull_version",
    "bump_unfollow_counter",
    "client",
    "count_stat",
    "delete_body",
    "deliveries_key",
    "drop_pull_authors",
    "feed_ids",
    "feed_key",
    "feed_oldest_id",
    "flush_buffered",
    "get_bodies",
    "hit_window",
    "live_channel",
    "lock_rebuild",
    "mark_rebuilding",
    "parked_key",
    "observe",
    "observe_buffered",
    "ping",
    "prefix",
    "pull_authors_from_cache",
    "pull_authors_key",
    "pull_version_key",
    "push_to_feeds",
    "read_histogram",
    "read_page",
    "read_page_pipelined",
    "read_prelude",
    "read_stat",
    "read_streams",
    "rebuild_lock_key",
    "rebuild_locked",
    "remove_from_feeds",
    "remove_from_timeline",
    "round_trip",
    "set_bodies",
    "set_pull_authors",
    "stats_key",
    "stream_register",
    "stream_unregister",
    "streams_key",
    "throttle_key",
    "timeline_ids",
    "timeline_author",
    "timeline_key",
    "token_delete",
    "token_get",
    "token_key",
    "token_set",
    "touch_feed",
    "unfollows_key",
    "unlock_rebuild",
    "user_forget",
    "window_of",
    "with_script",
    "write_feed",
    "write_timeline",
]
