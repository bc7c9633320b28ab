"""Stock, locks, the adjustment journal and the step barrier.

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
        "stock",
        sa.Column("warehouse_id", sa.String(64), primary_key=True),
        sa.Column("sku", sa.String(256), primary_key=True),
        sa.Column("product_id", sa.String(256), nullable=False, server_default=""),
        sa.Column("on_hand", sa.BigInteger, nullable=False),
        sa.Column("locked", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("bin", sa.String(64), nullable=False, server_default=""),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("on_hand >= 0", name="ck_stock_on_hand_nonnegative"),
        sa.CheckConstraint("locked >= 0", name="ck_stock_locked_nonnegative"),
        sa.CheckConstraint("on_hand - locked >= 0", name="ck_stock_available_nonnegative"),
    )
    op.create_table(
        "locks",
        sa.Column("lock_id", sa.String(64), primary_key=True),
        sa.Column("saga_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(256), nullable=False, server_default=""),
        sa.Column("allocation_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("warehouse_id", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(256), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("picking", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("notify_pending", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("quantity > 0", name="ck_locks_quantity_positive"),
        sa.CheckConstraint("status IN ('held', 'released', 'consumed', 'expired')", name="ck_locks_status"),
    )
    op.create_index("ix_locks_saga_id", "locks", ["saga_id"])
    op.create_index("ix_locks_status_expires_at", "locks", ["status", "expires_at"])
    op.create_index("ix_locks_notify_pending", "locks", ["notify_pending"])
    op.create_table(
        "adjustments",
        sa.Column("adjustment_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("warehouse_id", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(256), nullable=False),
        sa.Column("delta", sa.BigInteger, nullable=False),
        sa.Column("on_hand_after", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(256), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    create_barrier_table(op)


def downgrade() -> None:
    op.drop_table("barrier")
    op.drop_table("adjustments")
    op.drop_index("ix_locks_notify_pending", "locks")
    op.drop_index("ix_locks_status_expires_at", "locks")
    op.drop_index("ix_locks_saga_id", "locks")
    op.drop_table("locks")
    op.drop_table("stock")
