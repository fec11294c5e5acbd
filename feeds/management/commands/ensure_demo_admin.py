from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from follows.models import UserStats


class Command(BaseCommand):
    help = "Create (or reset) the demo superuser 'admin' with FEEDSITE_ADMIN_PASSWORD (default 'admin')."

    def handle(self, *args, **options) -> None:
        user, _ = get_user_model().objects.get_or_create(username="admin")
        user.is_staff = user.is_superuser = True
        user.set_password(settings.FEEDSITE_ADMIN_PASSWORD)
        user.save()
        UserStats.objects.get_or_create(user=user)
        self.stdout.write("demo superuser 'admin' ready")
