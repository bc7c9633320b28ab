"""Tables of the allocation service."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    false,
    true,
    func,
)

from invsaga.runtime.barrier import barrier_table

metadata = MetaData()

allocations = Table(
    "allocations",
    metadata,
    Column("allocation_id", String(64), primary_key=True),
    # One allocation per saga: the AllocateInventory step runs once per saga (barrier).
    Column("saga_id", String(64), nullable=False, unique=True),
    Column("order_id", String(256), nullable=False, server_default=""),
    Column("strategy", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("total_cost", Float, nullable=False, server_default="0"),
    Column("optimal", Boolean, nullable=False, server_default=true()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # Kept from the service's own expiry sweep (gone: the coordinator settles a reservation's
    # allocation, docs/lifecycle.md); no longer written.
    Column("expiry_notified", Boolean, nullable=False, server_default=false()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('active', 'cancelled', 'expired', 'fulfilled')", name="ck_allocations_status"),
    CheckConstraint("total_cost >= 0", name="ck_allocations_total_cost_nonnegative"),
    Index("ix_allocations_status_expires_at", "status", "expires_at"),
)

allocation_lines = Table(
    "allocation_lines",
    metadata,
    Column("allocation_id", String(64), ForeignKey("allocations.allocation_id", ondelete="CASCADE"), primary_key=True),
    Column("warehouse_id", String(64), primary_key=True),
    Column("sku", String(256), primary_key=True),
    Column("quantity", BigInteger, nullable=False),
    CheckConstraint("quantity > 0", name="ck_allocation_lines_quantity_positive"),
)

barrier = barrier_table(metadata)
