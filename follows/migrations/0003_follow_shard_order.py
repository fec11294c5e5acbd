"""Fan-out reads an author's followers in shard order (feedsite.shards.SHARD_ORDER_SQL): an
expression index on (followee, shard order) serves its boundaries and batch ranges. Built
CONCURRENTLY on PostgreSQL (outside a transaction): a large follows table keeps taking writes
while it builds."""

from django.db import migrations

# Literal, as migrations must be: (follower_id % VSHARDS) * ORDER_SHIFT + follower_id.
EXPR = "((follower_id % 1024) * 1099511627776 + follower_id)"


def create(apps, schema_editor) -> None:
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(
        f"CREATE INDEX {concurrently}IF NOT EXISTS follow_followee_shard_order "
        f"ON follows_follow (followee_id, {EXPR})",
        None,  # no parameters: '%' is the modulo operator here
    )


def drop(apps, schema_editor) -> None:
    schema_editor.execute("DROP INDEX IF EXISTS follow_followee_shard_order", None)


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("follows", "0002_blocks_and_mutes")]

    operations = [migrations.RunPython(create, drop)]
