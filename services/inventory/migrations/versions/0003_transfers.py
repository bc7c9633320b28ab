"""Transfers between warehouses: units expected at a destination (``incoming``) and each
transfer line's path, expected -> in transit -> received (or short, the difference recorded).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stock", sa.Column("incoming", sa.BigInteger, nullable=False, server_default="0"))
    op.create_check_constraint("ck_stock_incoming_nonnegative", "stock", "incoming >= 0")
    op.create_table(
        "transfer_lines",
        sa.Column("transfer_id", sa.String(64), primary_key=True),
        sa.Column("sku", sa.String(256), primary_key=True),
        sa.Column("from_warehouse", sa.String(64), nullable=False),
        sa.Column("to_warehouse", sa.String(64), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("received", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expected_arrival", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("quantity > 0", name="ck_transfer_lines_quantity_positive"),
        sa.CheckConstraint("received >= 0 AND received <= quantity", name="ck_transfer_lines_received"),
        sa.CheckConstraint(
            "status IN ('expected', 'in_transit', 'received', 'received_short', 'cancelled')",
            name="ck_transfer_lines_status",
        ),
    )
    op.create_index("ix_transfer_lines_to_warehouse_status", "transfer_lines", ["to_warehouse", "status"])


def downgrade() -> None:
    op.drop_index("ix_transfer_lines_to_warehouse_status", table_name="transfer_lines")
    op.drop_table("transfer_lines")
    op.drop_constraint("ck_stock_incoming_nonnegative", "stock")
    op.drop_column("stock", "incoming")
