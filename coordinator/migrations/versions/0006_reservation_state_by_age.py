"""ListSagas by reservation state, newest first, through an index (not a sort of every match).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sagas_reservation_state_created_at", "sagas", ["reservation_state", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_sagas_reservation_state_created_at", table_name="sagas")
