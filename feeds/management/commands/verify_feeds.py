from __future__ import annotations

import random
import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from feeds.conf import get_conf
from feeds.consistency import (
    feed_check,
    feed_repair,
    notification_check,
    notification_repair,
    object_timeline_check,
    object_timeline_repair,
    timeline_check,
    timeline_repair,
)
from follows.models import ObjectFollow, ObjectStats

OBJECT_CHUNK = 1000


class Command(BaseCommand):
    help = (
        "Compare every existing feed (home, the user's own timeline, notifications) and the "
        "timeline of every followed object in Redis with what it must hold "
        "(feeds/consistency.py): missing and extra entries per user or object and in total; "
        "exits 1 when anything is wrong; --repair fixes them."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--user", type=int, action="append", help="only these users")
        parser.add_argument("--sample", type=int, help="a random sample of this many users")
        parser.add_argument("--repair", action="store_true", help="fix what was found")

    def handle(self, *args, user=None, sample=None, repair=False, **options) -> None:
        ids = user or list(get_user_model().objects.order_by("id").values_list("id", flat=True))
        if sample is not None:
            if sample < 1:
                raise CommandError("--sample must be at least 1")
            ids = sorted(random.sample(ids, min(sample, len(ids))))  # noqa: S311
        conf = get_conf()
        progress = self._progress(len(ids))
        missing = extra = bad = 0
        counts = {"home": 0, "timeline": 0, "notifications": 0}
        checks = (
            ("home", feed_check, feed_repair),
            ("timeline", timeline_check, timeline_repair),
            ("notifications", notification_check, notification_repair),
        )
        for uid in ids:
            progress(1)
            for kind, check, fix in checks:
                report = check(uid, conf)
                if report is None:
                    continue  # no feed: built on the next read, nothing to check
                counts[kind] += 1
                if report.ok:
                    continue
                bad += 1
                missing += len(report.missing)
                extra += len(report.extra)
                self.stdout.write(
                    f"user={uid} feed={kind} missing={len(report.missing)} "
                    f"extra={len(report.extra)} missing_ids={report.missing[:5]} "
                    f"extra_ids={report.extra[:5]}"
                )
                if repair:
                    fix(report, conf)
        objects = 0
        for obj in self._objects(ids if user or sample is not None else None):
            report = object_timeline_check(obj, conf)
            if report is None:
                continue  # not built: built by the read or the publish that needs it
            objects += 1
            if report.ok:
                continue
            bad += 1
            missing += len(report.missing)
            extra += len(report.extra)
            self.stdout.write(
                f"object={obj[0]}:{obj[1]} feed=object-timeline missing={len(report.missing)} "
                f"extra={len(report.extra)} missing_ids={report.missing[:5]} "
                f"extra_ids={report.extra[:5]}"
            )
            if repair:
                object_timeline_repair(report, conf)
        self.stdout.write(f"verify_feeds: object_timelines={objects} (followed objects)")
        self.stdout.write(
            f"verify_feeds: users={len(ids)} feeds={counts['home']} "
            f"timelines={counts['timeline']} notification_feeds={counts['notifications']} "
            f"wrong={bad} missing={missing} extra={extra}" + (" repaired" if repair and bad else "")
        )
        if bad and not repair:
            raise SystemExit(1)

    def _objects(self, users: list[int] | None):
        """The objects whose timelines are checked: those the given users follow, or every
        object someone follows (keyset over the counters, never OFFSET)."""
        if users is not None:
            rows = ObjectFollow.objects.filter(user_id__in=users).order_by(
                "object_type", "object_id"
            )
            yield from rows.values_list("object_type", "object_id").distinct()
            return
        last = 0
        while True:
            chunk = list(
                ObjectStats.objects.filter(id__gt=last, followers_count__gt=0)
                .order_by("id")
                .values_list("id", "object_type", "object_id")[:OBJECT_CHUNK]
            )
            if not chunk:
                return
            last = chunk[-1][0]
            for _, object_type, object_id in chunk:
                yield object_type, object_id

    def _progress(self, total: int):
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, unit="user")
            return bar.update
        return lambda n: None
