from __future__ import annotations

import functools
import logging
import time
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from activities.access import access_activity_for_owner
from activities.serializers import ActivityOutSerializer
from feedsite.api.auth import TokenClaim, token_claim, token_confirm
from feedsite.api.cursor import FeedCursor, feed_cursor_decode, feed_cursor_encode
from feedsite.api.errors import (
    DATABASE_DOWN,
    DATABASE_UNAVAILABLE,
    RETRY_AFTER_SECONDS,
    STORE_UNAVAILABLE,
    domain_error_body,
)
from feedsite.api.params import PAGE_PARAMS, next_page_link, parse_limit
from feedsite.api.schema import ObjectPageSchema
from feedsite.api.throttles import WriteThrottle, parse_rate
from feedsite.errors import DomainError

from . import notifications, store
from .conf import get_conf
from .models import NotificationSettings
from .read import (
    MAX_SCRIPT_SOURCES,
    IdSource,
    RedisSource,
    feed_page,
    feed_read_open,
    feed_sources_prepare,
    first_read,
    hidden_authors,
)
from .rebuild import feed_ttl
from .selectors import fanout_status
from .throttles import FeedReadThrottle, count_window

log = logging.getLogger("feeds.views")


class FanoutStatusSerializer(serializers.Serializer):
    state = serializers.CharField()
    strategy = serializers.CharField()
    recipients = serializers.IntegerField()
    skipped = serializers.IntegerField()
    batches_total = serializers.IntegerField()
    batches_done = serializers.IntegerField()
    batches_failed = serializers.IntegerField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class FeedItemSerializer(ActivityOutSerializer):
    actor_count = serializers.IntegerField()
    actors = serializers.ListField(child=serializers.DictField())
    activity_ids = serializers.ListField(child=serializers.CharField())


def _page(
    user_id: int,
    limit: int,
    cursor: FeedCursor | None,
    source: IdSource | None,
    hidden: frozenset[int] | None = None,
) -> dict[str, Any]:
    """The response body of one feed page (both paths)."""
    started = time.perf_counter()
    if source is None:
        source = RedisSource(feed_read_open(user_id))
    items, nxt = feed_page(
        user_id=user_id, limit=limit, cursor=cursor, source=source, hidden=hidden
    )
    store.observe_buffered("read_seconds", (time.perf_counter() - started) * 1000)
    body: dict[str, Any] = {"items": items, "next_cursor": feed_cursor_encode(nxt) if nxt else None}
    if getattr(source, "partial", False):
        body["partial"] = True  # a cluster node did not answer in time: see feed_page
    return body


def _plain_json(accept: str) -> bool:
    """Whether an Accept header takes the lane's compact JSON as DRF would render it."""
    if "text/html" in accept or "indent" in accept:
        return False
    return "application/json" in accept or "*/*" in accept


def _json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), content_type="application/json", status=status)
    response["Vary"] = "Accept, Authorization"
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def lean_feed_read(request: HttpRequest, sources=None) -> HttpResponse | None:
    """GET /api/feed/ for an API client (``Authorization: Token``, JSON): one Redis round trip
    when warm and no SQL (store.read_warm: the token, the throttle, the pull-author list and,
    once Redis has confirmed the claim, the read mark and the first read of the page; then
    feeds.read.feed_page). On a cluster, or when Redis could not name the sources, two rounds:
    the prelude, then the page.
    Returns None when the request is not for this path (a browser, a session, no token): the
    DRF view answers it, with the same body. A token that does not authenticate is answered
    here as DRF answers it (401, or 429 past the address's failures), after one query at most;
    an unavailable store or database is the API's JSON 503 with Retry-After. ``sources`` swaps where the ids come
    from (the benchmark's SQL comparison); the rest is the same code."""
    if request.method != "GET" or "format" in request.GET:
        return None
    accept = request.META.get("HTTP_ACCEPT", "")
    if accept and not _plain_json(accept):
        return None  # a browser, another media type, `indent=`: DRF negotiates
    try:
        claim = token_claim(request)  # (a token not in the cache: one query, no more)
        if claim is None:
            return None  # no token: a session, or anonymous (DRF's 401)
        return _lean_read(request, claim, sources)
    except exceptions.AuthenticationFailed as exc:
        # Answered here as DRF words it: the view would look the same token up again.
        return _json({"detail": str(exc.detail)}, 401, {"WWW-Authenticate": "Token"})
    except exceptions.Throttled as exc:  # this address failed too often: no query made
        return _throttled(getattr(exc, "wait", None))
    except store.STORE_ERRORS as exc:
        if not store.store_unavailable(exc):
            raise  # a bug (WRONGTYPE, a Lua error): the lane's logged 500 (feedsite.wsgi)
        log.warning("feed read: the feed store is unavailable: %r", exc)
        return _json(STORE_UNAVAILABLE, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})
    except DATABASE_DOWN:  # a cold read (the token, settings, a rebuild) needs PostgreSQL
        log.warning("feed read: the database is unavailable")
        return _json(DATABASE_UNAVAILABLE, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def _throttled(wait: float | None) -> HttpResponse:
    """DRF's 429 for the lane."""
    seconds = max(1, int(wait or 1))
    body = {"detail": str(exceptions.Throttled(seconds).detail)}
    return _json(body, 429, {"Retry-After": str(seconds)})


def _lean_read(request: HttpRequest, claim: TokenClaim, sources) -> HttpResponse | None:
    conf = get_conf()
    limit, window = parse_rate(FeedReadThrottle.rate)
    # Counted under the user, once their token is confirmed (by Redis in the script, or by the
    # database here): a forged token naming someone's id spends none of their budget.
    throttle = (FeedReadThrottle.scope, FeedReadThrottle.user_ident(claim.user_id), window)
    try:
        page_limit = parse_limit(request.GET.get("limit"))
        cursor = feed_cursor_decode(request.GET.get("cursor"))
        bad: DomainError | None = None
    except DomainError as exc:  # answered once the token and the throttle let the request in
        bad = exc
    warm = plan = None
    if bad is None and not store.is_cluster():
        # One round trip for the prelude and, most of the time, the page (store.read_warm).
        # Another source (the benchmark's SQL rival) pays the same prelude: max_sources=0
        # stops the script before the page.
        window_ms = conf.aggregation_window_seconds * 1000
        plan = first_read(limit=page_limit, cursor=cursor, window_ms=window_ms)
        warm = store.read_warm(
            digest=claim.digest,
            user_id=claim.user_id,
            throttle=throttle,
            hit_limit=limit,
            threshold=conf.celebrity_threshold,
            max_sources=MAX_SCRIPT_SOURCES if sources is None else 0,
            mark_ttl=feed_ttl(conf),
            **plan,
        )
        pre = warm.prelude
    else:
        pre = store.read_prelude(digest=claim.digest, user_id=claim.user_id, throttle=None)
    if not token_confirm(claim, pre.token):
        return None  # the token is another user's than it claims: the DRF view answers
    hits, left = pre.hits, pre.window_left
    if not hits:  # not counted in the round trip (confirmed by the database, or two rounds)
        hits, left = count_window(*throttle) or (0, left)  # (None: fail open)
    if hits > limit:
        return _throttled(left)
    try:
        if bad is not None:
            raise bad
        if sources is None:
            keys = feed_sources_prepare(
                user_id=claim.user_id,
                conf=conf,
                feed_exists=True,  # the page read marks it, and rebuilds it when missing
                pull_raw=pre.pull_raw,
                pull_version=pre.pull_version,
            )
            source: IdSource = RedisSource(keys, mark_ttl=feed_ttl(conf))
            if warm is not None and warm.page is not None and warm.keys == keys:
                # The mark stays asked for: feed_page's first read takes the script's page
                # only when its arguments are the plan's (then the script marked the read).
                source = RedisSource(
                    keys, mark_ttl=feed_ttl(conf), first=warm.page, first_args=plan
                )
        else:
            source = sources(claim.user_id)
        hidden = hidden_authors(claim.user_id, pre.hidden_raw)
        page = _page(claim.user_id, page_limit, cursor, source, hidden)
        return _json(page, 200, next_page_link(request, page["next_cursor"]))
    except DomainError as exc:
        return _json(domain_error_body(exc), exc.status_code)


def _user_id(request: Request) -> int:
    """The caller's id (the views' permission class admits authenticated users only)."""
    user_id = request.user.pk
    if user_id is None:
        raise exceptions.NotAuthenticated()
    return int(user_id)


class FeedViewSet(viewsets.ViewSet):
    """The caller's home feed: aggregated, newest first, paged with an opaque cursor.

    API clients with a token take the lean path (lean_feed_read); the browsable API, sessions
    and every error DRF words itself (401) go through the viewset, with the same body."""

    schema = ObjectPageSchema()  # `list` answers one object, not an array

    throttle_classes = [FeedReadThrottle]

    @classmethod
    def as_view(cls, actions=None, **initkwargs):
        drf_view = super().as_view(actions, **initkwargs)

        @functools.wraps(drf_view)
        def view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            return lean_feed_read(request) or drf_view(request, *args, **kwargs)

        return view

    @extend_schema(
        parameters=[
            OpenApiParameter("limit", int, description="1-100, default 20"),
            OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
        ],
        responses=inline_serializer(
            "FeedPage",
            {
                "items": FeedItemSerializer(many=True),
                "next_cursor": serializers.CharField(allow_null=True),
                "partial": serializers.BooleanField(
                    required=False,
                    help_text="Only on Redis Cluster, true when a node did not answer within "
                    "the read deadline: the page lacks its entries, and next_cursor starts "
                    "where this page began (nothing is skipped).",
                ),
            },
        ),
    )
    def list(self, request: Request) -> Response:
        query = request.query_params
        limit, cursor = parse_limit(query.get("limit")), feed_cursor_decode(query.get("cursor"))
        page = _page(_user_id(request), limit, cursor, None)
        return Response(page, headers=next_page_link(request, page["next_cursor"]))


class FanoutActionMixin:
    """`fanout` of the activities viewset: where the activity's fan-out stands (its actor or
    staff)."""

    @extend_schema(responses=FanoutStatusSerializer)
    @action(detail=True, methods=["get"])
    def fanout(self, request: Request, activity_id: str) -> Response:
        activity = access_activity_for_owner(user=request.user, activity_id=activity_id)
        return Response(FanoutStatusSerializer(fanout_status(activity_id=activity.id)).data)


# --- notifications -----------------------------------------------------------------------------

NOTIFICATIONS = "notifications"  # their cursor kind


class NotificationItemSerializer(FeedItemSerializer):
    seen = serializers.BooleanField()
    read = serializers.BooleanField()


class NotificationCountsSerializer(serializers.Serializer):
    unseen = serializers.IntegerField()
    unread = serializers.IntegerField()


class NotificationPageSerializer(NotificationCountsSerializer):
    items = NotificationItemSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class NotificationReadSerializer(serializers.Serializer):
    """Documents the body: one of the two keys."""

    ids = serializers.ListField(child=serializers.CharField(), required=False)
    all = serializers.BooleanField(required=False)


class NotificationViewSet(viewsets.ViewSet):
    """Your notification feed: what was done to you, grouped like the home feed ("Ana, Bo and 3
    others followed you"), newest first, each item seen/read, with the counts."""

    schema = ObjectPageSchema()  # `list` answers one object, not an array

    throttle_classes = [WriteThrottle]  # seen and read (reads pass through)

    @extend_schema(parameters=PAGE_PARAMS, responses=NotificationPageSerializer)
    def list(self, request: Request) -> Response:
        limit = parse_limit(request.query_params.get("limit"))
        cursor = feed_cursor_decode(request.query_params.get("cursor"), NOTIFICATIONS)
        items, nxt, counts = notifications.notification_page(
            user_id=_user_id(request), limit=limit, cursor=cursor
        )
        next_cursor = feed_cursor_encode(nxt, NOTIFICATIONS) if nxt else None
        return Response(
            {"items": items, "next_cursor": next_cursor, **counts},
            headers=next_page_link(request, next_cursor),
        )

    @extend_schema(responses=NotificationCountsSerializer)
    @action(detail=False, methods=["get"])
    def counts(self, request: Request) -> Response:
        """How many notifications (activities) you have not seen and not read: one Redis
        round trip."""
        return Response(notifications.notification_counts(user_id=_user_id(request)))

    @extend_schema(request=None, responses=NotificationCountsSerializer)
    @action(detail=False, methods=["post"])
    def seen(self, request: Request) -> Response:
        """Mark everything up to now seen; answers the new counts."""
        return Response(notifications.notifications_mark_seen(user_id=_user_id(request)))

    @extend_schema(request=NotificationReadSerializer, responses=NotificationCountsSerializer)
    @action(detail=False, methods=["post"])
    def read(self, request: Request) -> Response:
        """Mark items read (``{"ids": [item ids]}``: every activity of each item) or everything
        (``{"all": true}``); read implies seen; unknown ids are ignored. Answers the new
        counts."""
        ids = notifications.parse_read_request(request.data)
        return Response(
            notifications.notifications_mark_read(user_id=_user_id(request), item_ids=ids)
        )


class NotificationSettingsSerializer(serializers.ModelSerializer):
    class Meta:
        model = NotificationSettings
        fields = ["email", "digest_minutes"]
        extra_kwargs = {"email": {"required": True}, "digest_minutes": {"required": True}}


class NotificationSettingsMixin:
    """`notification-settings` of the me viewset: how you hear of notifications while offline:
    `email` off, instant (one email each) or digest (at most one email per `digest_minutes`,
    5-1440)."""

    @extend_schema(responses=NotificationSettingsSerializer)
    @action(detail=False, methods=["get"], url_path="notification-settings")
    def notification_settings(self, request: Request) -> Response:
        row = notifications.notification_settings(user_id=_user_id(request))
        return Response(NotificationSettingsSerializer(row).data)

    def _settings_change(self, request: Request, partial: bool) -> Response:
        row = notifications.notification_settings(user_id=_user_id(request))
        data = NotificationSettingsSerializer(row, data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        row = notifications.notification_settings_update(
            user_id=row.user_id, changes=dict(data.validated_data)
        )
        return Response(NotificationSettingsSerializer(row).data)

    @extend_schema(request=NotificationSettingsSerializer, responses=NotificationSettingsSerializer)
    @notification_settings.mapping.put
    def notification_settings_put(self, request: Request) -> Response:
        return self._settings_change(request, partial=False)

    @extend_schema(request=NotificationSettingsSerializer, responses=NotificationSettingsSerializer)
    @notification_settings.mapping.patch
    def notification_settings_patch(self, request: Request) -> Response:
        return self._settings_change(request, partial=True)
