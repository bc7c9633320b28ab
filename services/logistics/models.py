"""Tables of the logistics service."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    false,
)

from invsaga.runtime.barrier import barrier_table

metadata = MetaData()

picklists = Table(
    "picklists",
    metadata,
    Column("picklist_id", String(64), primary_key=True),
    Column("saga_id", String(64), nullable=False, index=True),
    Column("order_id", String(256), nullable=False, server_default=""),
    Column("warehouse_id", String(64), nullable=False),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("is_urgent", Boolean, nullable=False, server_default=false()),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # An order's picklist, or a transfer's outbound one (its stock leaves for another warehouse).
    Column("kind", String(16), nullable=False, server_default="order"),
    CheckConstraint("status IN ('pending', 'processing', 'completed', 'cancelled')", name="ck_picklists_status"),
    CheckConstraint("kind IN ('order', 'transfer_out')", name="ck_picklists_kind"),
    # The pickers' queue: urgent first, then by priority, oldest first.
    Index("ix_picklists_queue", "warehouse_id", "status", "is_urgent", "priority", "created_at"),
)

picklist_lines = Table(
    "picklist_lines",
    metadata,
    Column("picklist_id", String(64), ForeignKey("picklists.picklist_id", ondelete="CASCADE"), primary_key=True),
    Column("sequence", Integer, primary_key=True),
    Column("sku", String(256), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("bin", String(64), nullable=False, server_default=""),
    CheckConstraint("quantity > 0", name="ck_picklist_lines_quantity_positive"),
    CheckConstraint("sequence > 0", name="ck_picklist_lines_sequence_positive"),
)

# Every picklist status change, written in the same transaction as the change: the coordinator
# reads those it has not acknowledged (ListPicklistChanges) to follow its reservations, then
# acknowledges them (AckPicklistChanges deletes them).
picklist_changes = Table(
    "picklist_changes",
    metadata,
    Column("change_id", BigInteger, primary_key=True, autoincrement=True),
    Column("picklist_id", String(64), nullable=False),
    Column("saga_id", String(64), nullable=False),
    Column("warehouse_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
)

barrier = barrier_table(metadata)
