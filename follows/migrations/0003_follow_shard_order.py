"""Fan-out reads an author's followers in shard order (feedsite.shards.SHARD_ORDER_SQL): an
expression index on (followee, shard order) serves its boundaries and batch ranges."""

from django.db import migrations

# Literal, as migrations must be: (follower_id % VSHARDS) * ORDER_SHIFT + follower_id.
EXPR = "((follower_id % 1024) * 1099511627776 + follower_id)"


class Migration(migrations.Migration):
    dependencies = [("follows", "0002_blocks_and_mutes")]

    operations = [
        migrations.RunSQL(
            f"CREATE INDEX follow_followee_shard_order ON follows_follow (followee_id, {EXPR})",
            "DROP INDEX follow_followee_shard_order",
        )
    ]
