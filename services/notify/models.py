"""Tables of the notify service."""

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

from invsaga.runtime.barrier import barrier_table

metadata = MetaData()

notifications = Table(
    "notifications",
    metadata,
    # Insertion order: "newest first" must not depend on clock resolution.
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("notification_id", String(64), nullable=False, unique=True),
    Column("saga_id", String(64), nullable=False, server_default=""),
    Column("kind", String(32), nullable=False),
    Column("order_id", String(256), nullable=False, server_default=""),
    Column("customer_id", String(256), nullable=False, server_default=""),
    Column("message", String(256), nullable=False, server_default=""),
    Column("attributes", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_notifications_saga_id", "saga_id"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column(
        "notification_id", String(64), ForeignKey("notifications.notification_id", ondelete="CASCADE"), primary_key=True
    ),
    # The webhook URL. The log channel has no row (store.py); "log" rows of earlier versions are skipped.
    Column("channel", String(512), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", String(1024), nullable=False, server_default=""),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    # When a pending delivery is next due; a worker pushes it forward while it holds the claim.
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="ck_deliveries_state"),
    CheckConstraint("attempts >= 0", name="ck_deliveries_attempts_nonnegative"),
    Index("ix_deliveries_due", "state", "next_attempt_at"),
)

barrier = barrier_table(metadata)
