"""Every endpoint x (anonymous, another user, the owner, staff): the status each gets, and no
answer to anyone but the owner carries the owner's private data (token, password hash, email)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from activities.services import activity_publish
from tests.conftest import make_token
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
WHO = ("anonymous", "other", "owner", "staff")
STAR = {"verb": "starred", "object_type": "project", "object_id": "p-1"}
OBJECT = {"type": "project", "id": "owner/repo"}

# (method, path, body, expected status per WHO); {owner} and {activity} are filled in.
MATRIX = [
    ("GET", "/api/users/{owner}/", None, (401, 200, 200, 200)),
    ("GET", "/api/users/{owner}/followers/", None, (401, 200, 200, 200)),
    ("GET", "/api/users/{owner}/following/", None, (401, 200, 200, 200)),
    ("GET", "/api/users/{owner}/activities/", None, (401, 200, 200, 200)),
    ("POST", "/api/users/{owner}/follow/", None, (401, 201, 400, 201)),
    ("DELETE", "/api/users/{owner}/follow/", None, (401, 204, 204, 204)),
    ("GET", "/api/activities/{activity}/", None, (401, 200, 200, 200)),
    ("GET", "/api/activities/{activity}/fanout/", None, (401, 403, 200, 200)),
    ("DELETE", "/api/activities/{activity}/", None, (401, 403, 204, 204)),
    ("POST", "/api/activities/", STAR, (401, 201, 201, 201)),
    ("GET", "/api/feed/", None, (401, 200, 200, 200)),
    ("POST", "/api/auth/logout/", None, (401, 204, 204, 204)),
    ("POST", "/api/auth/logoutall/", None, (401, 204, 204, 204)),
    ("POST", "/api/users/{owner}/block/", None, (401, 201, 400, 201)),
    ("DELETE", "/api/users/{owner}/block/", None, (401, 204, 204, 204)),
    ("POST", "/api/users/{owner}/mute/", None, (401, 201, 400, 201)),
    ("DELETE", "/api/users/{owner}/mute/", None, (401, 204, 204, 204)),
    ("GET", "/api/me/", None, (401, 200, 200, 200)),
    ("GET", "/api/me/blocks/", None, (401, 200, 200, 200)),
    ("GET", "/api/me/mutes/", None, (401, 200, 200, 200)),
    ("GET", "/api/me/notification-settings/", None, (401, 200, 200, 200)),
    ("PATCH", "/api/me/notification-settings/", {"email": "off"}, (401, 200, 200, 200)),
    ("GET", "/api/notifications/", None, (401, 200, 200, 200)),
    ("GET", "/api/notifications/counts/", None, (401, 200, 200, 200)),
    ("POST", "/api/notifications/seen/", None, (401, 200, 200, 200)),
    ("POST", "/api/notifications/read/", {"all": True}, (401, 200, 200, 200)),
    ("GET", "/api/me/objects/", None, (401, 200, 200, 200)),
    # Objects (type:id) are everyone's to follow; each user follows and unfollows for themselves.
    ("GET", "/api/objects/?type=project&id=p-1", None, (401, 200, 200, 200)),
    ("GET", "/api/objects/activities/?type=project&id=p-1", None, (401, 200, 200, 200)),
    ("POST", "/api/objects/follow/", OBJECT, (401, 201, 201, 201)),
    ("DELETE", "/api/objects/follow/?type=project&id=owner%2Frepo", None, (401, 204, 204, 204)),
    ("GET", "/api/schema/", None, (200, 200, 200, 200)),
    ("GET", "/metrics", None, (403, 403, 403, 403)),  # DEBUG off, no token configured
]


@pytest.mark.parametrize(("method", "path", "body", "expected"), MATRIX, ids=lambda v: str(v))
def test_authorization_matrix(method, path, body, expected, settings):
    settings.FEEDSITE_METRICS_TOKEN = ""
    owner = UserFactory(email="owner@example.com")
    users = {"anonymous": None, "other": UserFactory(), "owner": owner}
    users["staff"] = UserFactory(is_staff=True)
    owner_token = make_token(owner)
    private = [owner_token, owner.password, owner.email]
    for who, want in zip(WHO, expected, strict=True):
        activity, _ = activity_publish(actor_id=owner.pk, data=STAR)  # fresh: deletes consume it
        client = APIClient()
        user = users[who]
        if user is not None:
            client.credentials(
                HTTP_AUTHORIZATION=f"Token {owner_token if who == 'owner' else make_token(user)}"
            )
        url = path.format(owner=owner.pk, activity=activity.id)
        res = client.generic(
            method,
            url,
            data=body and __import__("json").dumps(body),
            content_type="application/json",
        )
        assert res.status_code == want, (who, method, url, res.status_code, res.content[:200])
        if who != "owner":
            text = res.content.decode(errors="replace")
            assert not any(secret and secret in text for secret in private), (who, url)
