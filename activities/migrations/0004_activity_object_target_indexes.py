"""An object's activities, newest first: indexes on (object_type, object_id, id DESC) and
(target_type, target_id, id DESC) (GET /api/objects/activities/ merges the two by id). Built
CONCURRENTLY on PostgreSQL (outside a transaction), as follows 0003: a large activities table
keeps taking publishes while they build."""

from django.db import migrations, models

INDEXES = {
    "activity_object_id_desc": "object_type, object_id, id DESC",
    "activity_target_id_desc": "target_type, target_id, id DESC",
}


def create(apps, schema_editor) -> None:
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    for name, columns in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX {concurrently}IF NOT EXISTS {name} ON activities_activity ({columns})"
        )


def drop(apps, schema_editor) -> None:
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("activities", "0003_activity_edited_at")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop)],
            state_operations=[
                migrations.AddIndex(
                    model_name="activity",
                    index=models.Index(
                        fields=["object_type", "object_id", "-id"], name="activity_object_id_desc"
                    ),
                ),
                migrations.AddIndex(
                    model_name="activity",
                    index=models.Index(
                        fields=["target_type", "target_id", "-id"], name="activity_target_id_desc"
                    ),
                ),
            ],
        )
    ]
