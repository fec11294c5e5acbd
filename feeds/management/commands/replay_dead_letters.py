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
        ok, failures = fanout.dead_letters_replay(list(qs.values_list("id", flat=True)))
        for dl_id, error in failures:
            self.stderr.write(f"dead letter {dl_id}: {error}")
        self.stdout.write(f"replayed={ok} failed={len(failures)}")
        if failures:
            raise SystemExit(1)
