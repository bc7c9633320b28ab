"""The tenant that started each saga: API clients see only their own tenant's sagas.

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
    op.add_column("sagas", sa.Column("tenant", sa.String(64), nullable=False, server_default=""))
    op.create_index("ix_sagas_tenant_created_at", "sagas", ["tenant", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_sagas_tenant_created_at", table_name="sagas")
    op.drop_column("sagas", "tenant")
