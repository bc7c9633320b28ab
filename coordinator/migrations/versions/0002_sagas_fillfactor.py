"""Room on every page of ``sagas`` for in-place (HOT) updates.

A saga row is saved about seven times in its life and changes no indexed column on most of
those saves; PostgreSQL can then write the new version on the same page without touching the
indexes, if the page has room for it. A row holds about 1.5 KB (the compressed state), so half
of each page is kept free. Only pages written from now on are affected.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE sagas SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE sagas RESET (fillfactor)")
