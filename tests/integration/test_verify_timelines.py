"""verify_feeds checks and repairs pull-author timelines: the author's newest live activities,
capped; a lost entry is missing, a deleted activity's id (a ghost) is extra, --repair rewrites
the timeline. Real worker, real PostgreSQL and Redis."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from feeds import store
from feeds.models import FanoutJob
from feeds.services import feed_settings_update
from follows.services import follow_create
from tests.conftest import activate, auth_client, verify_feeds_clean, wait_until
from tests.factories import UserFactory
from tests.integration.test_recovery import post


def delete(user, aid: int) -> None:
    assert auth_client(user).delete(f"/api/activities/{aid}/").status_code == 204
    wait_until(
        lambda: FanoutJob.objects.filter(activity_id=aid, kind="remove", state="done").exists()
    )


def verify(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("verify_feeds", *args, stdout=out)
    except SystemExit as exit_info:
        return int(exit_info.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_verify_feeds_finds_a_lost_entry_and_a_ghost_in_a_pull_authors_timeline_and_repairs(
    live_worker,
):
    feed_settings_update(celebrity_threshold=1, feed_max_length=4)
    author, reader = UserFactory(), UserFactory()
    activate(author, reader)
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    posts = [post(author, f"tl-{n}") for n in range(5)]  # the timeline keeps the newest 4
    assert FanoutJob.objects.get(activity_id=posts[-1], kind="publish").strategy == "pull"
    ghost = posts[2]
    delete(author, ghost)
    live = [posts[4], posts[3], posts[1]]
    assert store.timeline_ids(author.pk) == live
    code, text = verify()
    assert code == 0 and "timelines=" in text and "wrong=0" in text, text

    # Corrupt it: a live entry lost, the deleted activity back in.
    store.remove_from_timeline(author.pk, [posts[3]])
    store.write_timeline(author.pk, [ghost], 4)
    assert store.timeline_ids(author.pk) == [posts[4], ghost, posts[1]]
    code, text = verify("--user", str(author.pk))
    assert code == 1, text
    assert f"user={author.pk} feed=timeline missing=1 extra=1" in text, text
    assert f"missing_ids=[{posts[3]}] extra_ids=[{ghost}]" in text, text

    code, text = verify("--user", str(author.pk), "--repair")
    assert "repaired" in text, text
    assert store.timeline_ids(author.pk) == live
    verify_feeds_clean()
    items = auth_client(reader).get("/api/feed/").json()["items"]
    assert [int(i) for item in items for i in item["activity_ids"]] == live


def test_verify_feeds_flags_another_authors_id_in_a_timeline(live_worker):
    feed_settings_update(celebrity_threshold=1)
    author, other = UserFactory(), UserFactory()
    activate(author, other)
    mine, theirs = post(author, "mine"), post(other, "theirs")
    store.write_timeline(author.pk, [theirs], 500)
    code, text = verify("--user", str(author.pk))
    assert (
        code == 1 and f"feed=timeline missing=0 extra=1 missing_ids=[] extra_ids=[{theirs}]" in text
    )
    verify("--user", str(author.pk), "--repair")
    assert store.timeline_ids(author.pk) == [mine]


@pytest.mark.django_db
def test_a_timeline_never_built_is_not_checked():
    author = UserFactory()
    assert not store.timeline_exists(author.pk)
    code, text = verify("--user", str(author.pk))
    assert code == 0 and "timelines=0" in text, text
