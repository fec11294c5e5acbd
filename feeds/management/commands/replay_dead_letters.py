from django.core.management.base import BaseCommand

from feeds import fanout
from feeds.models import FanoutDeadLetter


class Command(BaseCommand):
    help = "Replay fan-out batches that failed after all their retries (dead letters)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--job", type=int, help="only this fan-out job")

    def handle(self, *args, job: int | None = None, **options) -> None:
        qs = FanoutDeadLetter.objects.filter(replayed_at__isnull=True).order_by("id")
        if job:
            qs = qs.filter(job_id=job)
        ok = failed = 0
        for dl_id in qs.values_list("id", flat=True):
            try:
                ok += fanout.dead_letter_replay(dead_letter_id=dl_id)
            except Exception as exc:  # noqa: BLE001 - keep it for the next run
                failed += 1
                self.stderr.write(f"dead letter {dl_id}: {type(exc).__name__}: {exc}")
        self.stdout.write(f"replayed={ok} failed={failed}")
        if failed:
            raise SystemExit(1)
