"""Picklist status changes, recorded with each change until the coordinator acknowledges them.

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
        "picklist_changes",
        sa.Column("change_id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("picklist_id", sa.String(64), nullable=False),
        sa.Column("saga_id", sa.String(64), nullable=False),
        sa.Column("warehouse_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("picklist_changes")
