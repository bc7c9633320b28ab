"""Allocations, their lines and the step barrier.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from invsaga.runtime.barrier import create_barrier_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "allocations",
        sa.Column("allocation_id", sa.String(64), primary_key=True),
        sa.Column("saga_id", sa.String(64), nullable=False, unique=True),
        sa.Column("order_id", sa.String(256), nullable=False, server_default=""),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total_cost", sa.Float, nullable=False, server_default="0"),
        sa.Column("optimal", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expiry_notified", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('active', 'cancelled', 'expired')", name="ck_allocations_status"),
        sa.CheckConstraint("total_cost >= 0", name="ck_allocations_total_cost_nonnegative"),
    )
    op.create_index("ix_allocations_status_expires_at", "allocations", ["status", "expires_at"])
    op.create_table(
        "allocation_lines",
        sa.Column(
            "allocation_id",
            sa.String(64),
            sa.ForeignKey("allocations.allocation_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("warehouse_id", sa.String(64), primary_key=True),
        sa.Column("sku", sa.String(256), primary_key=True),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.CheckConstraint("quantity > 0", name="ck_allocation_lines_quantity_positive"),
    )
    create_barrier_table(op)


def downgrade() -> None:
    op.drop_table("barrier")
    op.drop_table("allocation_lines")
    op.drop_index("ix_allocations_status_expires_at", "allocations")
    op.drop_table("allocations")
