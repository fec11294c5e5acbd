"""FanoutJob.actor becomes a plain id (as activity_id): deleting a user deletes their activities,
and the remove jobs of those must be written and run after the user row is gone. The column
(actor_id, indexed) stays; only its foreign-key constraint goes."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("feeds", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="fanoutjob",
            name="actor",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=models.DO_NOTHING,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(model_name="fanoutjob", name="actor"),
                migrations.AddField(
                    model_name="fanoutjob",
                    name="actor_id",
                    field=models.BigIntegerField(db_index=True, default=0),
                    preserve_default=False,
                ),
            ],
        ),
    ]
