from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from feeds import views as feed_views
from feeds.metrics import metrics_view
from feedsite.api import viewsets
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


# Resources are viewsets on a router (feedsite.api.viewsets composes them); /api/ is the root.
router = SimpleRouter(trailing_slash=True)
router.register("users", viewsets.UserViewSet, basename="user")
router.register("activities", viewsets.ActivityViewSet, basename="activity")
router.register("feed", feed_views.FeedViewSet, basename="feed")
router.register("notifications", feed_views.NotificationViewSet, basename="notification")
router.register("me", viewsets.MeViewSet, basename="me")
# Objects (type:id) are named by query parameters or body fields, never in the path: their ids
# may hold "/". /api/objects/, /api/objects/follow/, /api/objects/activities/.
router.register("objects", viewsets.ObjectViewSet, basename="object")

api = [
    path("", ApiRoot.as_view(), name="api-root"),
    path("auth/register/", follow_views.RegisterApi.as_view(), name="register"),
    path("auth/token/", TokenApi.as_view(), name="token"),
    path("auth/logout/", LogoutApi.as_view(), name="logout"),
    path("auth/logoutall/", LogoutAllApi.as_view(), name="logout-all"),
    *router.urls,
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
