"""The Python client of the saga coordinator's public API, for order services and tools.

    from invsaga.client import Client, InvsagaError

    with Client() as client:                      # $INVSAGA_COORDINATOR_ADDR, token and TLS from the environment
        saga = client.reserve({"request_id": "order-1001", "order_id": "1001", "customer_id": "C-7",
                               "items": [{"sku": "SKU-001", "quantity": 2}]})
        for event in client.watch(saga.saga_id):  # survives coordinator restarts: each event once, in order
            ...
        final = client.wait(saga.saga_id)

The API (``Client`` is synchronous; ``AsyncClient`` has the same methods as coroutines, and
its ``list`` and ``watch`` are async iterators)::

    Client(address: str | None = None, *, tls: TLSConfig | None = None, token: str | None = None,
           token_file: str | None = None, timeout: float = 30.0, retry: RetryPolicy = RetryPolicy())
    .reserve(request: StartSagaRequest | InventoryRequest | Mapping[str, Any], *, timeout=None) -> Saga
    .get(saga_id: str, *, timeout=None) -> Saga
    .list(*, status=None, order_id="", customer_id="", created_after=None, created_before=None,
          reservation_state=None, page_size=100, limit=None, timeout=None) -> Iterator[Saga]   # every page
    .list_page(*, <the same filters>, page_size=50, page_token="", timeout=None) -> SagaPage  # one page
    .watch(saga_id: str, after_seq: int = 0, follow_reservation: bool = False,
           event_types: Iterable[int | str] = (), *, timeout: float | None = None) -> Iterator[SagaEvent]
    .wait(saga_id: str, timeout: float | None = 600.0) -> Saga                               # terminal
    .cancel(saga_id: str, reason: str = "", release_unpicked: bool = False, *, timeout=None) -> Saga
    .resume(saga_id: str, *, timeout=None) -> Saga
    .extend(saga_id: str, until: datetime | timedelta | Timestamp, *, timeout=None) -> Reservation
    .close(); also a context manager (``with`` / ``async with``)

Results are the generated messages of ``invsaga.coordinator.v1`` (``Saga``, ``SagaEvent``,
``Reservation``); CancelSaga and ResumeSaga answer with a summary of the saga (saga_id,
request_id, status; a released reservation). ``status`` and ``reservation_state`` take the enum
value or its name, short or whole (``"COMPLETED"``, ``"SAGA_STATUS_COMPLETED"``); so do
``event_types`` (``"SAGA_COMPLETED"``).

Where: ``address`` else ``$INVSAGA_COORDINATOR_ADDR`` else ``localhost:50050``. Who:
``token`` else ``token_file`` else ``$INVSAGA_TOKEN`` else ``$INVSAGA_TOKEN_FILE`` (a bearer
token); TLS from ``tls`` (PEM file paths) else ``$INVSAGA_TLS_CA`` / ``_CERT`` / ``_KEY``
(a certificate and its key for mutual TLS) — the same settings the ``invsaga`` command reads.

Idempotency: ``reserve`` refuses a request without a ``request_id`` (``InvsagaError``
INVALID_ARGUMENT, nothing sent). The coordinator answers a repeated request_id with the saga it
already started, so the same order reserved twice — a retry, a redelivered message, a restarted
order service — reserves once; choose an id that is stable for the order (e.g. ``"order-1001"``).

Deadlines and retries: every call has a deadline (``timeout``, the client's 30 s unless given),
and its retries happen within it, with exponential backoff capped at ``RetryPolicy.max_backoff``.
UNAVAILABLE, and RESOURCE_EXHAUSTED for a busy server (SERVER_BUSY, COORDINATOR_BUSY: refused
before any effect), are retried on every call; DEADLINE_EXCEEDED of one attempt only on the
reads (get, list, watch) and on ``reserve`` (its request_id makes a repeat harmless). ``watch`` reconnects
when its stream breaks (the coordinator restarted, a connection recycled) and resumes after the
last event it yielded: the caller sees every event once, in ``seq`` order, without gaps; it gives
up after ``RetryPolicy.watch_reconnect_timeout`` without a working stream.

Errors: every failure is an ``InvsagaError`` with ``.code`` (a ``grpc.StatusCode``),
``.message``, ``.violations`` (``BadRequest`` field violations, as ``Violation(field,
description)``), ``.reason`` and ``.metadata`` (``ErrorInfo``); docs/integration.md says what
to do about each code.
"""

from __future__ import annotations

from invsaga.client._aio import AsyncClient
from invsaga.client._common import (
    DEFAULT_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    TERMINAL_EVENTS,
    TERMINAL_STATUSES,
    InvsagaError,
    RetryPolicy,
    SagaPage,
    TLSConfig,
    Violation,
    is_terminal,
)
from invsaga.client._sync import Client

__all__ = [
    "AsyncClient",
    "Client",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WAIT_TIMEOUT",
    "InvsagaError",
    "RetryPolicy",
    "SagaPage",
    "TERMINAL_EVENTS",
    "TERMINAL_STATUSES",
    "TLSConfig",
    "Violation",
    "is_terminal",
]
