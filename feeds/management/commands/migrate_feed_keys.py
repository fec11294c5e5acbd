from __future__ import annotations

from django.core.management.base import BaseCommand

from feeds.migrate_keys import migrate_keys


class Command(BaseCommand):
    help = (
        "Move Redis keys of the first key layout (feeds and timelines without a virtual-shard "
        "hash tag, member = score = id) to the current one (feeds/store/keys.py), keeping feeds "
        "warm. Idempotent; run with the Celery workers stopped. Not required: a feed that is "
        "not found is rebuilt from PostgreSQL when its owner reads it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count, change nothing")

    def handle(self, *args, dry_run: bool = False, **options) -> None:
        report = migrate_keys(dry_run=dry_run)
        self.stdout.write(("dry run: " if dry_run else "") + report.summary())
