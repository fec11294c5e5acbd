"""GET /api/feed/stream/: server-sent events on Redis pub/sub, async under ASGI (no thread is
held per client). The stream subscribes to the channels of the authors the caller follows (and
their own), sends an `activity` event per new activity, a comment heartbeat every 15 s, and on
reconnect replays from the feed what came after Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from feedsite.api.auth import token_user
from follows.selectors import followee_ids

from . import store
from .hydrate import hydrate
from .read import feed_items_after, single_item

log = logging.getLogger("feeds.stream")


async def _user(request: HttpRequest):
    header = request.headers.get("Authorization", "")
    if header.startswith("Token "):
        return await sync_to_async(token_user)(header[6:].strip())
    user = await request.auser()
    return user if user.is_authenticated else None


def _followees(user_id: int) -> set[int]:
    return set(followee_ids(follower_id=user_id))


def _event(item: dict) -> str:
    return f"id: {item['id']}\nevent: activity\ndata: {json.dumps(item, separators=(',', ':'))}\n\n"


async def _events(user_id: int, stream_id: str, last_event_id: int | None, r) -> AsyncIterator[str]:
    heartbeat = settings.FEEDSITE_SSE_HEARTBEAT_SECONDS
    live = store.LiveSubscription(r)
    try:
        authors = await sync_to_async(_followees)(user_id) | {user_id}
        await live.follow(authors)
        yield "retry: 3000\n\n"
        sent: set[int] = set()
        if last_event_id is not None:
            for item in await sync_to_async(feed_items_after)(
                user_id=user_id, after_id=last_event_id
            ):
                sent.add(int(item["id"]))
                yield _event(item)
        beat = time.monotonic()
        while True:
            aid = await live.next_id(timeout=1.0)
            if aid is not None:
                if aid not in sent:
                    bodies = await sync_to_async(hydrate)([aid])
                    if aid in bodies:  # deleted meanwhile: nothing to show
                        sent.add(aid)
                        yield _event(single_item(bodies[aid]))
            if time.monotonic() - beat >= heartbeat:
                beat = time.monotonic()
                yield ": heartbeat\n\n"
                await store.stream_register(r, user_id, stream_id, time.time(), 3 * heartbeat)
                # Follows change while a stream is open: subscribe to new authors, drop old ones.
                now = await sync_to_async(_followees)(user_id) | {user_id}
                await live.follow(now - authors)
                await live.unfollow(authors - now)
                authors = now
    except asyncio.CancelledError:
        raise
    finally:
        await live.close()
        await store.stream_unregister(r, user_id, stream_id)
        await r.aclose()


async def feed_stream(request: HttpRequest) -> HttpResponseBase:
    if request.method != "GET":
        return JsonResponse({"detail": f'Method "{request.method}" not allowed.'}, status=405)
    user = await _user(request)
    if user is None:
        return JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)
    raw_last = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    try:
        last_event_id = int(raw_last) if raw_last else None
    except ValueError:
        return JsonResponse({"Last-Event-ID": ["must be an activity id"]}, status=400)
    r = store.async_client()
    stream_id = uuid.uuid4().hex
    heartbeat = settings.FEEDSITE_SSE_HEARTBEAT_SECONDS
    live = await store.stream_register(r, user.pk, stream_id, time.time(), 3 * heartbeat)
    if live > settings.FEEDSITE_SSE_MAX_STREAMS:
        await store.stream_unregister(r, user.pk, stream_id)
        await r.aclose()
        return JsonResponse(
            {"detail": f"at most {settings.FEEDSITE_SSE_MAX_STREAMS} open streams per user"},
            status=429,
            headers={"Retry-After": str(heartbeat)},
        )
    response = StreamingHttpResponse(
        _events(user.pk, stream_id, last_event_id, r), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
