"""Sagas and their event log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sagas",
        sa.Column("saga_id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(256), nullable=False, unique=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("is_urgent", sa.Boolean, nullable=False),
        sa.Column("state", sa.LargeBinary, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.BigInteger, nullable=True),
        sa.Column("deadline", sa.BigInteger, nullable=False),
        sa.Column("trace_context", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_sagas_status_lease", "sagas", ["status", "lease_until"])
    op.create_index("ix_sagas_created_at", "sagas", ["created_at"])
    op.create_table(
        "saga_events",
        sa.Column("saga_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("event", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("saga_events")
    op.drop_index("ix_sagas_created_at", "sagas")
    op.drop_index("ix_sagas_status_lease", "sagas")
    op.drop_table("sagas")
