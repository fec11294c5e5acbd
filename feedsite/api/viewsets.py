"""The API's viewsets, composed where the apps meet: each app brings its own viewset or actions,
and this layer joins them (the users viewset has the activities app's `activities` action, the
activities viewset the feeds app's `fanout`, `me` the feeds' notification settings) and passes
the feeds' pull-author predicate to the follows app, which imports nothing of feeds."""

from __future__ import annotations

from activities.views import ActivityViewSetBase, AuthorActivitiesMixin
from feeds.conf import is_pull_author
from feeds.views import FanoutActionMixin, NotificationSettingsMixin
from follows.views import MeViewSetBase, ObjectViewSetBase, UserViewSetBase


class UserViewSet(AuthorActivitiesMixin, UserViewSetBase):
    pull_author = staticmethod(is_pull_author)


class ActivityViewSet(FanoutActionMixin, ActivityViewSetBase):
    pass


class MeViewSet(NotificationSettingsMixin, MeViewSetBase):
    pull_author = staticmethod(is_pull_author)


class ObjectViewSet(ObjectViewSetBase):
    pull_author = staticmethod(is_pull_author)
