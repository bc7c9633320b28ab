"""An allocation can end FULFILLED: its reservation was picked (the coordinator settles it).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("ck_allocations_status", "allocations", type_="check")
    op.create_check_constraint(
        "ck_allocations_status", "allocations", "status IN ('active', 'cancelled', 'expired', 'fulfilled')"
    )


def downgrade() -> None:
    op.execute("UPDATE allocations SET status = 'cancelled' WHERE status = 'fulfilled'")
    op.drop_constraint("ck_allocations_status", "allocations", type_="check")
    op.create_check_constraint("ck_allocations_status", "allocations", "status IN ('active', 'cancelled', 'expired')")
