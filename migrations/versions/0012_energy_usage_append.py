"""energy_usage becomes append-only: the spend transaction COPYs one row per
batch and attribution key instead of upserting, and the finalizer sums the
rows of a node-window. The rows already there stay valid (a sum of one row).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("energy_usage_pkey", "energy_usage", type_="primary")
    op.create_index("energy_usage_node_window", "energy_usage", ["window_start", "node_id"])


def downgrade() -> None:
    # Fold the appended rows back into one per key before the key returns.
    op.execute(
        """
        CREATE TEMP TABLE energy_usage_folded ON COMMIT DROP AS
        SELECT window_start, node_id, model, tenant, route, feature, batch_bucket, cache_state,
               sum(attempts)::bigint AS attempts, sum(input_tokens)::bigint AS input_tokens,
               sum(output_tokens)::bigint AS output_tokens,
               sum(cache_read_tokens)::bigint AS cache_read_tokens, sum(weight)::bigint AS weight
        FROM energy_usage
        GROUP BY window_start, node_id, model, tenant, route, feature, batch_bucket, cache_state;
        DELETE FROM energy_usage;
        INSERT INTO energy_usage SELECT * FROM energy_usage_folded;
        """
    )
    op.drop_index("energy_usage_node_window", table_name="energy_usage")
    op.create_primary_key(
        "energy_usage_pkey",
        "energy_usage",
        ["window_start", "node_id", "model", "tenant", "route", "feature", "batch_bucket",
         "cache_state"],
    )  # fmt: skip
