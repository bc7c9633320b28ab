"""Tables of the inventory service."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    false,
)

from invsaga.runtime.barrier import barrier_table

metadata = MetaData()

stock = Table(
    "stock",
    metadata,
    Column("warehouse_id", String(64), primary_key=True),
    Column("sku", String(256), primary_key=True),
    Column("product_id", String(256), nullable=False, server_default=""),
    Column("on_hand", BigInteger, nullable=False),
    Column("locked", BigInteger, nullable=False, server_default="0"),
    Column("bin", String(64), nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Units on their way here (transfer lines EXPECTED or IN_TRANSIT to this warehouse): never
    # part of on_hand or available until received.
    Column("incoming", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("on_hand >= 0", name="ck_stock_on_hand_nonnegative"),
    CheckConstraint("incoming >= 0", name="ck_stock_incoming_nonnegative"),
    CheckConstraint("locked >= 0", name="ck_stock_locked_nonnegative"),
    CheckConstraint("on_hand - locked >= 0", name="ck_stock_available_nonnegative"),
)

locks = Table(
    "locks",
    metadata,
    Column("lock_id", String(64), primary_key=True),
    Column("saga_id", String(64), nullable=False),
    Column("order_id", String(256), nullable=False, server_default=""),
    Column("allocation_id", String(64), nullable=False, server_default=""),
    Column("warehouse_id", String(64), nullable=False),
    Column("sku", String(256), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("picking", Boolean, nullable=False, server_default=false()),
    # True from expiry until the notification went out, so a notify outage only delays it.
    Column("notify_pending", Boolean, nullable=False, server_default=false()),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("quantity > 0", name="ck_locks_quantity_positive"),
    CheckConstraint("status IN ('held', 'released', 'consumed', 'expired')", name="ck_locks_status"),
    Index("ix_locks_saga_id", "saga_id"),
    Index("ix_locks_status_expires_at", "status", "expires_at"),
    Index("ix_locks_notify_pending", "notify_pending"),
)

# Every operator change of on_hand, with its reason: the audit trail of stock counts.
adjustments = Table(
    "adjustments",
    metadata,
    Column("adjustment_id", Integer, primary_key=True, autoincrement=True),
    Column("warehouse_id", String(64), nullable=False),
    Column("sku", String(256), nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("on_hand_after", BigInteger, nullable=False),
    Column("reason", String(256), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Units locked per warehouse over all its SKUs (= Σ stock.locked), kept by the same statements
# that lock, release and consume stock. LockInventory takes its units here with a guard against
# the warehouse's capacity, so concurrent locks can never pass it (SPEC §9). ``capacity`` is the
# last one a lock was given (QueryWarehouses' figure), for operators.
warehouse_load = Table(
    "warehouse_load",
    metadata,
    Column("warehouse_id", String(64), primary_key=True),
    Column("locked", BigInteger, nullable=False, server_default="0"),
    Column("capacity", BigInteger, nullable=False),
    CheckConstraint("locked >= 0", name="ck_warehouse_load_locked_nonnegative"),
)

# One row per SKU of a transfer between warehouses (SPEC §10): expected at the destination,
# in transit once its outbound picklist completed, then received (short: quantity - received
# units never arrived, the recorded discrepancy), or cancelled before it left.
transfer_lines = Table(
    "transfer_lines",
    metadata,
    Column("transfer_id", String(64), primary_key=True),
    Column("sku", String(256), primary_key=True),
    Column("from_warehouse", String(64), nullable=False),
    Column("to_warehouse", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("received", BigInteger, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False),
    Column("expected_arrival", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("quantity > 0", name="ck_transfer_lines_quantity_positive"),
    CheckConstraint("received >= 0 AND received <= quantity", name="ck_transfer_lines_received"),
    CheckConstraint(
        "status IN ('expected', 'in_transit', 'received', 'received_short', 'cancelled')",
        name="ck_transfer_lines_status",
    ),
    Index("ix_transfer_lines_to_warehouse_status", "to_warehouse", "status"),
)

barrier = barrier_table(metadata)
