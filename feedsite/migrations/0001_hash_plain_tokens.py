"""Tokens issued before django-rest-knox were stored in plain text (rest_framework.authtoken):
each becomes a knox token, hashed, expiring one TTL from now, and the plain row is deleted.
Clients keep using the token they have."""

from datetime import timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone


def hash_plain_tokens(apps, schema_editor):
    from knox.crypto import hash_token
    from knox.settings import CONSTANTS

    Plain = apps.get_model("authtoken", "Token")
    Knox = apps.get_model("knox", "AuthToken")
    expiry = timezone.now() + timedelta(days=settings.FEEDSITE_TOKEN_TTL_DAYS)
    rows = [
        Knox(
            digest=hash_token(t.key),
            token_key=t.key[: CONSTANTS.TOKEN_KEY_LENGTH],
            user_id=t.user_id,
            expiry=expiry,
        )
        for t in Plain.objects.all().iterator()
    ]
    Knox.objects.bulk_create(rows, batch_size=5000, ignore_conflicts=True)
    Plain.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("authtoken", "0004_alter_tokenproxy_options"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(hash_plain_tokens, migrations.RunPython.noop)]
