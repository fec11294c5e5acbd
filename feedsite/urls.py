from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from activities import views as activity_views
from feeds import views as feed_views
from feeds.conf import is_pull_author
from feeds.metrics import metrics_view
from feedsite.api.health import healthz
from feedsite.api.root import ApiRoot
from feedsite.api.tokens import LogoutAllApi, LogoutApi, TokenApi
from follows import views as follow_views

# The API docs load nothing from other origins (they work offline and leak no visit): ReDoc's
# footer logo, fetched from its CDN, is refused here instead of failing on the network.
DOCS_CSP = "default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:"


def same_origin_only(view):
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = DOCS_CSP
        return response

    return wrapped


# The follows app shows whether a user is a pull author; the feeds app decides (the arrows
# point one way: follows knows nothing of feeds, the URL conf wires the two).
users = {"pull_author": is_pull_author}

api = [
    path("", ApiRoot.as_view(), name="api-root"),
    path("auth/register/", follow_views.RegisterApi.as_view(), name="register"),
    path("auth/token/", TokenApi.as_view(), name="token"),
    path("auth/logout/", LogoutApi.as_view(), name="logout"),
    path("auth/logoutall/", LogoutAllApi.as_view(), name="logout-all"),
    path("users/<int:user_id>/", follow_views.UserDetailApi.as_view(**users), name="user-detail"),
    path(
        "users/<int:user_id>/follow/",
        follow_views.UserFollowApi.as_view(**users),
        name="user-follow",
    ),
    path(
        "users/<int:user_id>/followers/",
        follow_views.UserFollowersApi.as_view(**users),
        name="user-followers",
    ),
    path(
        "users/<int:user_id>/following/",
        follow_views.UserFollowingApi.as_view(**users),
        name="user-following",
    ),
    path("users/<int:user_id>/block/", follow_views.UserBlockApi.as_view(), name="user-block"),
    path("users/<int:user_id>/mute/", follow_views.UserMuteApi.as_view(), name="user-mute"),
    path("me/", follow_views.MeApi.as_view(**users), name="me"),
    path(
        "me/notification-settings/",
        feed_views.NotificationSettingsApi.as_view(),
        name="notification-settings",
    ),
    path("me/blocks/", follow_views.MyBlocksApi.as_view(), name="my-blocks"),
    path("me/mutes/", follow_views.MyMutesApi.as_view(), name="my-mutes"),
    path(
        "users/<int:user_id>/activities/",
        activity_views.UserActivitiesApi.as_view(),
        name="user-activities",
    ),
    path("activities/", activity_views.ActivityCreateApi.as_view(), name="activity-create"),
    path(
        "activities/<str:activity_id>/",
        activity_views.ActivityDetailApi.as_view(),
        name="activity-detail",
    ),
    path(
        "activities/<str:activity_id>/fanout/",
        feed_views.ActivityFanoutApi.as_view(),
        name="activity-fanout",
    ),
    path("feed/", feed_views.FeedListApi.as_view(), name="feed"),
    path("notifications/", feed_views.NotificationListApi.as_view(), name="notifications"),
    path(
        "notifications/counts/",
        feed_views.NotificationCountsApi.as_view(),
        name="notification-counts",
    ),
    path(
        "notifications/seen/", feed_views.NotificationSeenApi.as_view(), name="notifications-seen"
    ),
    path(
        "notifications/read/", feed_views.NotificationReadApi.as_view(), name="notifications-read"
    ),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "docs/",
        same_origin_only(SpectacularSwaggerView.as_view(url_name="schema")),
        name="docs",
    ),
    path(
        "redoc/",
        same_origin_only(SpectacularRedocView.as_view(url_name="schema")),
        name="redoc",
    ),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", include(api)),
    path("api-auth/", include("rest_framework.urls")),
]

handler404 = "feedsite.api.errors.not_found"
