"""Saga kinds: a reservation (StartSaga) or a transfer between warehouses (StartTransfer).

Every saga stored before is a reservation. ListSagas by kind reads an index in newest-first
order, like its other filters.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sagas", sa.Column("kind", sa.Integer(), nullable=False, server_default="1"))
    op.create_index("ix_sagas_kind_created_at", "sagas", ["kind", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_sagas_kind_created_at", table_name="sagas")
    op.drop_column("sagas", "kind")
