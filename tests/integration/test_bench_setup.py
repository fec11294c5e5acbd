"""The benchmarks' set-up resizes an author's followers on a reused database and leaves the
follow counters exact (it once drove following_count negative and crashed)."""

from __future__ import annotations

import pytest

from bench.common import ensure_follows, ensure_users
from follows.models import Follow, UserStats

pytestmark = pytest.mark.django_db(transaction=True)


def _counters_match_rows(user_ids: list[int]) -> None:
    for stats in UserStats.objects.filter(user_id__in=user_ids):
        assert stats.followers_count == Follow.objects.filter(followee_id=stats.user_id).count()
        assert stats.following_count == Follow.objects.filter(follower_id=stats.user_id).count()


def test_ensure_follows_resizes_down_and_up_with_exact_counters() -> None:
    author, *fans = ensure_users("bench-setup", 41)
    other = fans[-1]
    Follow.objects.create(follower_id=fans[0], followee_id=other)  # a follow made with signals

    for size in (30, 10, 40, 40):
        ensure_follows(fans[:size], author)
        assert set(
            Follow.objects.filter(followee_id=author).values_list("follower_id", flat=True)
        ) == set(fans[:size])
        assert UserStats.objects.get(user_id=author).followers_count == size
        _counters_match_rows([author, *fans])
    assert UserStats.objects.get(user_id=fans[0]).following_count == 2  # author and other
    assert UserStats.objects.get(user_id=fans[35]).following_count == 1
