"""Notifications, their deliveries and the step barrier.

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
        "notifications",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("notification_id", sa.String(64), nullable=False, unique=True),
        sa.Column("saga_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("order_id", sa.String(256), nullable=False, server_default=""),
        sa.Column("customer_id", sa.String(256), nullable=False, server_default=""),
        sa.Column("message", sa.String(256), nullable=False, server_default=""),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_notifications_saga_id", "notifications", ["saga_id"])
    op.create_table(
        "deliveries",
        sa.Column(
            "notification_id",
            sa.String(64),
            sa.ForeignKey("notifications.notification_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("channel", sa.String(512), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(1024), nullable=False, server_default=""),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="ck_deliveries_state"),
        sa.CheckConstraint("attempts >= 0", name="ck_deliveries_attempts_nonnegative"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["state", "next_attempt_at"])
    create_barrier_table(op)


def downgrade() -> None:
    op.drop_table("barrier")
    op.drop_index("ix_deliveries_due", "deliveries")
    op.drop_table("deliveries")
    op.drop_index("ix_notifications_saga_id", "notifications")
    op.drop_table("notifications")
