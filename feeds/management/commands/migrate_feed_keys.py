from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from feeds.store.migrate import NewLayoutInUse, migrate_keys


class Command(BaseCommand):
    help = (
        "Move Redis keys of the earlier key layouts (oldest-first feeds, or feeds without a "
        "virtual-shard hash tag) to the current one (feeds/store/keys.py), keeping feeds "
        "warm. Run it during the upgrade, before any process of the new version starts; it "
        "refuses once keys of the new layout exist (then --drop deletes the old keys). Not "
        "required: a feed that is not found is rebuilt from PostgreSQL when its owner reads it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count, change nothing")
        parser.add_argument(
            "--drop", action="store_true", help="delete the old keys instead of moving them"
        )

    def handle(self, *args, dry_run: bool = False, drop: bool = False, **options) -> None:
        try:
            report = migrate_keys(dry_run=dry_run, drop=drop)
        except NewLayoutInUse as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(("dry run: " if dry_run else "") + report.summary())
