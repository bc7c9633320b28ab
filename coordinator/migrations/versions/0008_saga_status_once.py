"""A saga's status stored once: the ``status`` column; ``claimed_from`` for a cancel or resume.

Until now the ``state`` blob carried the status too, and a saga whose column said COMPENSATING
while its blob said COMPLETED or FAILED was one a CancelSaga or ResumeSaga had just taken over.
That is now the ``claimed_from`` column; the blobs are rewritten without their status.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from invsaga.coordinator.v1 import coordinator_pb2 as pb

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_PAGE = 1000


def upgrade() -> None:
    op.add_column("sagas", sa.Column("claimed_from", sa.Integer(), nullable=False, server_default="0"))
    conn = op.get_bind()
    after = ""
    while True:
        rows = conn.execute(
            sa.text("SELECT saga_id, status, state FROM sagas WHERE saga_id > :after ORDER BY saga_id LIMIT :n"),
            {"after": after, "n": _PAGE},
        ).all()
        if not rows:
            break
        for saga_id, status, state in rows:
            saga = pb.Saga.FromString(state)
            claimed_from = 0
            if status == pb.SAGA_STATUS_COMPENSATING and saga.status in (
                pb.SAGA_STATUS_COMPLETED,
                pb.SAGA_STATUS_FAILED,
            ):
                claimed_from = saga.status
            if saga.status or claimed_from:
                saga.status = pb.SAGA_STATUS_UNSPECIFIED
                conn.execute(
                    sa.text("UPDATE sagas SET state = :state, claimed_from = :claimed WHERE saga_id = :id"),
                    {"state": saga.SerializeToString(), "claimed": claimed_from, "id": saga_id},
                )
        after = rows[-1][0]


def downgrade() -> None:
    # The blobs get their status back from the column; a pending cancel or resume from claimed_from.
    conn = op.get_bind()
    after = ""
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT saga_id, status, state, claimed_from FROM sagas WHERE saga_id > :after ORDER BY saga_id LIMIT :n"
            ),
            {"after": after, "n": _PAGE},
        ).all()
        if not rows:
            break
        for saga_id, status, state, claimed_from in rows:
            saga = pb.Saga.FromString(state)
            saga.status = claimed_from or status
            conn.execute(
                sa.text("UPDATE sagas SET state = :state WHERE saga_id = :id"),
                {"state": saga.SerializeToString(), "id": saga_id},
            )
        after = rows[-1][0]
    op.drop_column("sagas", "claimed_from")
