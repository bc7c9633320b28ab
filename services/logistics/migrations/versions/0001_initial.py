"""Picklists, their lines and the step barrier.

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
        "picklists",
        sa.Column("picklist_id", sa.String(64), primary_key=True),
        sa.Column("saga_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(256), nullable=False, server_default=""),
        sa.Column("warehouse_id", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("is_urgent", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'processing', 'completed', 'cancelled')", name="ck_picklists_status"),
    )
    op.create_index("ix_picklists_saga_id", "picklists", ["saga_id"])
    op.create_index(
        "ix_picklists_queue", "picklists", ["warehouse_id", "status", "is_urgent", "priority", "created_at"]
    )
    op.create_table(
        "picklist_lines",
        sa.Column(
            "picklist_id", sa.String(64), sa.ForeignKey("picklists.picklist_id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("sequence", sa.Integer, primary_key=True),
        sa.Column("sku", sa.String(256), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("bin", sa.String(64), nullable=False, server_default=""),
        sa.CheckConstraint("quantity > 0", name="ck_picklist_lines_quantity_positive"),
        sa.CheckConstraint("sequence > 0", name="ck_picklist_lines_sequence_positive"),
    )
    create_barrier_table(op)


def downgrade() -> None:
    op.drop_table("barrier")
    op.drop_table("picklist_lines")
    op.drop_index("ix_picklists_queue", "picklists")
    op.drop_index("ix_picklists_saga_id", "picklists")
    op.drop_table("picklists")
