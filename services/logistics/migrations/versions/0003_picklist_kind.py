"""Picklist kinds: an order's (every picklist before) or a transfer's outbound one.

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
    op.add_column("picklists", sa.Column("kind", sa.String(16), nullable=False, server_default="order"))
    op.create_check_constraint("ck_picklists_kind", "picklists", "kind IN ('order', 'transfer_out')")


def downgrade() -> None:
    op.drop_constraint("ck_picklists_kind", "picklists")
    op.drop_column("picklists", "kind")
