"""Sagas found by business key and time, and the reservation a COMPLETED saga holds.

order_id and customer_id are copied out of the saga's request when it is created, so that
ListSagas can filter by them through an index. reservation_state (common.v1.ReservationState,
NULL until the saga COMPLETED) and reservation_expires_at (epoch ms) let ListSagas filter by the
reservation's state and the coordinator find the reservations whose time has run out.
cancel_reason is what CancelSaga was told, for the replica that drives the saga to read.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sagas", sa.Column("order_id", sa.String(256), nullable=False, server_default=""))
    op.add_column("sagas", sa.Column("customer_id", sa.String(256), nullable=False, server_default=""))
    op.add_column("sagas", sa.Column("reservation_state", sa.Integer, nullable=True))
    op.add_column("sagas", sa.Column("reservation_expires_at", sa.BigInteger, nullable=True))
    op.add_column("sagas", sa.Column("cancel_reason", sa.String(256), nullable=False, server_default=""))
    op.create_index("ix_sagas_order_id_created_at", "sagas", ["order_id", "created_at"])
    op.create_index("ix_sagas_customer_id_created_at", "sagas", ["customer_id", "created_at"])
    op.create_index("ix_sagas_reservation_expiry", "sagas", ["reservation_state", "reservation_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_sagas_reservation_expiry", table_name="sagas")
    op.drop_index("ix_sagas_customer_id_created_at", table_name="sagas")
    op.drop_index("ix_sagas_order_id_created_at", table_name="sagas")
    for column in ("cancel_reason", "reservation_expires_at", "reservation_state", "customer_id", "order_id"):
        op.drop_column("sagas", column)
