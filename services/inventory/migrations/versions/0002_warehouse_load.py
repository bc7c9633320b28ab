"""Units locked per warehouse, kept with every lock change, to enforce capacity when locking.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "warehouse_load",
        sa.Column("warehouse_id", sa.String(64), primary_key=True),
        sa.Column("locked", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("capacity", sa.BigInteger, nullable=False),
        sa.CheckConstraint("locked >= 0", name="ck_warehouse_load_locked_nonnegative"),
    )
    # What is locked already (2^62: no capacity known yet; the next lock sets it).
    op.execute(
        "INSERT INTO warehouse_load (warehouse_id, locked, capacity)"
        " SELECT warehouse_id, sum(locked), 4611686018427387904 FROM stock GROUP BY warehouse_id"
    )


def downgrade() -> None:
    op.drop_table("warehouse_load")
