"""Warehouses, assortment and the step barrier.

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
        "warehouses",
        sa.Column("warehouse_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("address", sa.String(256), nullable=False, server_default=""),
        sa.Column("lat", sa.Float, nullable=True),
        sa.Column("lon", sa.Float, nullable=True),
        sa.Column("capacity", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("per_unit", sa.Float, nullable=False, server_default="0"),
        sa.Column("per_km_unit", sa.Float, nullable=False, server_default="0"),
        sa.Column("per_shipment", sa.Float, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("capacity >= 0", name="ck_warehouses_capacity_nonnegative"),
        sa.CheckConstraint("status IN ('active', 'maintenance', 'closed')", name="ck_warehouses_status"),
    )
    op.create_table(
        "assortment",
        sa.Column(
            "warehouse_id",
            sa.String(64),
            sa.ForeignKey("warehouses.warehouse_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("sku", sa.String(256), primary_key=True),
    )
    op.create_index("ix_assortment_sku", "assortment", ["sku"])
    create_barrier_table(op)


def downgrade() -> None:
    op.drop_table("barrier")
    op.drop_index("ix_assortment_sku", "assortment")
    op.drop_table("assortment")
    op.drop_table("warehouses")
