"""Tables of the coordinator: saga instances (state as one protobuf blob) and their event log."""

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, LargeBinary, MetaData, String, Table, Text

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
    # The tenant of the API token that started the saga ('' for none: admins and open meshes).
    Column("tenant", String(64), nullable=False, server_default=""),
    # Copied from the request at creation, for ListSagas' filters.
    Column("order_id", String(256), nullable=False, server_default=""),
    Column("customer_id", String(256), nullable=False, server_default=""),
    # The reservation of a COMPLETED saga (common.v1.ReservationState; NULL before), and when
    # an unpicked one expires (epoch ms): ListSagas' filter and the expiry sweep.
    Column("reservation_state", Integer, nullable=True),
    Column("reservation_expires_at", BigInteger, nullable=True),
    # What CancelSaga was told, for the replica driving the saga when it stops it.
    Column("cancel_reason", String(256), nullable=False, server_default=""),
    # Which definition the saga runs (coordinator.v1.SagaKind): ListSagas' kind filter.
    Column("kind", Integer, nullable=False, server_default="1"),
    # The saga's status is the ``status`` column alone (``state`` is stored without it). A
    # CancelSaga of a COMPLETED saga or a ResumeSaga of a FAILED one sets ``status`` to
    # COMPENSATING and this to the status it took the saga from (coordinator.v1.SagaStatus),
    # so that the replica that drives it on announces the cancel or the resume; its first
    # save sets it back to 0.
    Column("claimed_from", Integer, nullable=False, server_default="0"),
    Index("ix_sagas_status_lease", "status", "lease_until"),
    Index("ix_sagas_created_at", "created_at"),
    Index("ix_sagas_tenant_created_at", "tenant", "created_at"),
    Index("ix_sagas_order_id_created_at", "order_id", "created_at"),
    Index("ix_sagas_customer_id_created_at", "customer_id", "created_at"),
    Index("ix_sagas_reservation_expiry", "reservation_state", "reservation_expires_at"),
    Index("ix_sagas_reservation_state_created_at", "reservation_state", "created_at"),
    Index("ix_sagas_kind_created_at", "kind", "created_at"),
)

saga_events = Table(
    "saga_events",
    metadata,
    Column("saga_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("event", LargeBinary, nullable=False),
)

# Notices the coordinator owes the notify service (``coordinator.outbox``): written in the same
# statement as the saga's terminal save, delivered by a background task until the notify
# service acknowledges, then deleted. The key is the notice's barrier key at the notify service,
# so a notice delivered twice is stored there once.
notice_outbox = Table(
    "notice_outbox",
    metadata,
    Column("saga_id", String(64), primary_key=True),
    Column("step", Integer, primary_key=True),  # common.v1.SagaStep: NOTIFY or NOTIFY_FAILURE
    # The notify service's ExecuteRequest, serialized, as built when the saga reached its end.
    Column("request", LargeBinary, nullable=False),
    # 'pending' until acknowledged (then the row goes); 'failed' when the notify service refused
    # it for good (kept for an operator; never retried).
    Column("state", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", String(256), nullable=False, server_default=""),
    # Epoch ms: when a pending notice is next due; a replica sending it pushes it on by a lease.
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_notice_outbox_due", "state", "next_attempt_at"),
)
