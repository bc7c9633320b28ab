"""Tables of the coordinator: saga instances (state as one protobuf blob) and their event log."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

sagas = Table(
    "sagas",
    metadata,
    Column("saga_id", String(64), primary_key=True),
    Column("request_id", String(256), nullable=False, unique=True),
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("is_urgent", Boolean, nullable=False),
    # The whole Saga message as GetSaga returns it; the columns beside it are for queries.
    # Times are epoch milliseconds (UTC).
    Column("state", LargeBinary, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("cancel_requested", Boolean, nullable=False),
    Column("owner", String(64), nullable=True),
    Column("lease_until", BigInteger, nullable=True),
    Column("deadline", BigInteger, nullable=False),
    Column("trace_context", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_sagas_status_lease", "status", "lease_until"),
    Index("ix_sagas_created_at", "created_at"),
)

saga_events = Table(
    "saga_events",
    metadata,
    Column("saga_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("event", LargeBinary, nullable=False),
)
