"""manage.py backfill: rebuild feeds, author timelines and followed objects' timelines from
PostgreSQL."""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime
from datetime import time as dtime

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from feeds import rebuild, store
from follows.models import ObjectFollow, ObjectStats

CELERY_AUTO_USERS = 50_000  # above this, a full run fans out to the backfill queue by default


def _since(raw: str | None) -> datetime | None:
    if not raw:
        return None
    moment = parse_datetime(raw)
    if moment is None:
        day = parse_date(raw)
        if day is None:
            raise CommandError(f"--since must be a date (YYYY-MM-DD) or an ISO time, not {raw!r}")
        moment = datetime.combine(day, dtime.min)
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)


class Command(BaseCommand):
    help = (
        "Rebuild feeds, author timelines and the timelines of followed objects from PostgreSQL "
        "(after losing Redis, or to repair). "
        "Idempotent and safe beside live fan-out: ids are merged in, so it can be interrupted "
        "and run again."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--user", type=int, nargs="+", dest="users", help="only these user ids")
        parser.add_argument("--since", help="only activities at or after this date / ISO time")
        parser.add_argument(
            "--dry-run", action="store_true", help="compute and report, write nothing"
        )
        parser.add_argument(
            "--batch-size", type=int, default=500, help="users per batch (and per task)"
        )
        parser.add_argument(
            "--celery", action="store_true", help="rebuild through the backfill queue"
        )
        parser.add_argument("--no-celery", action="store_true", help="never use Celery")

    def handle(
        self,
        *args,
        users=None,
        since=None,
        dry_run=False,
        batch_size=500,
        celery=False,
        no_celery=False,
        **options,
    ) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        since_at = _since(since)
        user_model = get_user_model()
        if users:
            found = set(user_model.objects.filter(id__in=users).values_list("id", flat=True))
            missing = sorted(set(users) - found)
            if missing:
                raise CommandError(f"unknown user ids: {missing}")
            total = len(found)
        else:
            total = user_model.objects.count()
        use_celery = (celery or (total > CELERY_AUTO_USERS and not users)) and not no_celery
        if use_celery and (users or dry_run):
            raise CommandError("--celery rebuilds all users and writes: drop --user / --dry-run")
        started = time.monotonic()
        try:
            if use_celery:
                done, entries = self._via_celery(total, batch_size, since_at)
            else:
                done, entries = self._in_process(users, total, batch_size, since_at, dry_run)
        except KeyboardInterrupt:
            self.stderr.write(
                "\ninterrupted: run the same command again to finish (it is idempotent)"
            )
            raise SystemExit(130) from None
        seconds = time.monotonic() - started
        rate = done / seconds if seconds else 0.0
        self.stdout.write(
            f"backfill {'dry-run ' if dry_run else ''}done: users={done} entries={entries} "
            f"seconds={seconds:.2f} users_per_s={rate:.0f}"
        )

    def _batches(self, users: list[int] | None, batch_size: int):
        if users:
            ordered = sorted(set(users))
            for start in range(0, len(ordered), batch_size):
                yield ordered[start : start + batch_size]
            return
        last = 0
        user_model = get_user_model()
        while True:  # keyset over user ids, never OFFSET
            ids = list(
                user_model.objects.filter(id__gt=last)
                .order_by("id")
                .values_list("id", flat=True)[:batch_size]
            )
            if not ids:
                return
            last = ids[-1]
            yield ids

    def _progress(self, total: int):
        if sys.stdout.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, unit="users", file=sys.stdout)
            return bar.update, bar.close
        state = {"done": 0, "t0": time.monotonic()}

        def update(n: int) -> None:
            state["done"] += n
            elapsed = time.monotonic() - state["t0"]
            rate = state["done"] / elapsed if elapsed else 0.0
            eta = (total - state["done"]) / rate if rate else 0.0
            pct = 100 * state["done"] / total if total else 100
            self.stdout.write(
                f"backfill: {state['done']}/{total} users ({pct:.1f}%), {rate:.0f} users/s, eta {eta:.0f}s"
            )

        return update, lambda: None

    def _in_process(self, users, total, batch_size, since_at, dry_run) -> tuple[int, int]:
        update, close = self._progress(total)
        done = entries = 0
        try:
            for ids in self._batches(users, batch_size):
                result = rebuild.users_rebuild(user_ids=ids, since=since_at, dry_run=dry_run)
                done += result.users
                entries += result.entries
                update(result.users)
        finally:
            close()
        for objects in self._object_batches(users, batch_size):
            entries += rebuild.object_timelines_rebuild(objects=objects, dry_run=dry_run)
        return done, entries

    def _object_batches(self, users: list[int] | None, batch_size: int):
        """The followed objects whose timelines are rebuilt, in batches: those the given users
        follow, or every object someone follows (keyset over the counter rows)."""
        if users:
            rows = ObjectFollow.objects.filter(user_id__in=users)
            objects = sorted(set(rows.values_list("object_type", "object_id")))
            for start in range(0, len(objects), batch_size):
                yield objects[start : start + batch_size]
            return
        for lo, hi in self._object_ranges(batch_size):
            yield rebuild.object_ids_in_range(lo=lo, hi=hi)

    def _object_ranges(self, batch_size: int):
        """(lo, hi] ranges of counter row ids, ``batch_size`` followed objects each."""
        last = 0
        while True:
            ids = list(
                ObjectStats.objects.filter(id__gt=last, followers_count__gt=0)
                .order_by("id")
                .values_list("id", flat=True)[:batch_size]
            )
            if not ids:
                return
            yield last, ids[-1]
            last = ids[-1]

    def _via_celery(self, total, batch_size, since_at) -> tuple[int, int]:
        from feeds.tasks import backfill_objects_task, backfill_users_task

        run_id = uuid.uuid4().hex[:12]
        last = 0
        for ids in self._batches(None, batch_size):
            backfill_users_task.delay(
                last, ids[-1], since_at.isoformat() if since_at else None, run_id
            )
            last = ids[-1]
        objects = 0
        for lo, hi in self._object_ranges(batch_size):
            backfill_objects_task.delay(lo, hi, run_id)
            objects += len(rebuild.object_ids_in_range(lo=lo, hi=hi))
        update, close = self._progress(total)
        seen = 0
        try:
            while seen < total or store.read_stat(f"backfill:{run_id}:objects") < objects:
                time.sleep(0.5)
                now = store.read_stat(f"backfill:{run_id}:users")
                if now > seen:
                    update(now - seen)
                    seen = now
        finally:
            close()
        return seen, store.read_stat(f"backfill:{run_id}:entries")
