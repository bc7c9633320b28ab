"""A saga as its row stores it: the state blob holds everything but the status, which is the
``status`` column's alone (read back by ``load_saga``); ``SagaRow`` is a row as loaded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from invsaga.coordinator.v1 import coordinator_pb2 as pb


def state_bytes(saga: pb.Saga) -> bytes:
    """``saga`` as stored in the ``state`` column: without its status, which is the column's."""
    status = saga.status
    saga.status = pb.SAGA_STATUS_UNSPECIFIED
    try:
        return saga.SerializeToString()
    finally:
        saga.status = status


def load_saga(state: bytes, status: int) -> pb.Saga:
    """A stored saga, with its status from the ``status`` column."""
    saga = pb.Saga.FromString(state)
    saga.status = status
    saga.kind = saga.kind or pb.SAGA_KIND_RESERVATION  # stored before sagas had kinds
    return saga


@dataclass
class SagaRow:
    saga: pb.Saga
    status: int
    request_hash: str
    last_seq: int
    cancel_requested: bool
    owner: str | None
    lease_until: int | None
    deadline: int
    trace_context: str
    # The tenant of the API client that started it ('' for none).
    tenant: str = ""
    # A saga started here: its insert's result (None once committed, else the row holding its
    # request_id). The driver confirms it before the first step that changes anything.
    created: asyncio.Future | None = None
    # The terminal status a CancelSaga or ResumeSaga took the saga from (0: none), until the
    # driver's first save (``models.sagas.claimed_from``).
    claimed_from: int = 0


def row_of(r) -> SagaRow:
    return SagaRow(
        saga=load_saga(r.state, r.status),
        status=r.status,
        request_hash=r.request_hash,
        last_seq=r.last_seq,
        cancel_requested=bool(r.cancel_requested),
        owner=r.owner,
        lease_until=r.lease_until,
        deadline=r.deadline,
        trace_context=r.trace_context,
        tenant=r.tenant,
        claimed_from=r.claimed_from,
    )
