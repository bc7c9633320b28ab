"""What the coordinator's servicer answers with, and how it reads a request: sagas bounded to
a reply, summaries, ListSagas' filters, the caller's tenant, and checks of ids and addresses."""

from __future__ import annotations

from typing import Callable

from coordinator import lifecycle, validation
from coordinator.commands import TERMINAL_EVENTS
from coordinator.store import SagaFilters
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.errors import InvalidArgument, NotFound, Violations
from invsaga.runtime import security

WATCH_POLL_SECONDS = 2.0

# Replies are sized for the 4 MiB a gRPC client accepts by default (the server could send 8).
REPLY_BYTES = 4 * 1024 * 1024
SAGA_BYTES = REPLY_BYTES - 64 * 1024  # one saga in any reply, with room for the rest of it
# StartSaga answers with the whole new saga up to this size, with its summary above it.
START_REPLY_BYTES = 64 * 1024
# A ListSagas page ends before it would pass this; its first saga always comes.
PAGE_BYTES = 1024 * 1024


def _clear(path: str) -> Callable[[pb.Saga], None]:
    *parents, name = path.split(".")

    def clear(saga: pb.Saga) -> None:
        message = saga
        for parent in parents:
            message = getattr(message, parent)
        message.ClearField(name)

    return clear


def _clear_step_errors(saga: pb.Saga) -> None:
    for step in saga.steps:
        step.ClearField("error")


# What ``fit`` leaves out of a saga too large for a reply, in this order: first the working
# data of the steps (the allocation holds their outcome), then the client's own metadata,
# then the rest of the step results, and the request's lines last.
OMISSIONS: tuple[tuple[str, Callable[[pb.Saga], None]], ...] = (
    ("availability", _clear("availability")),
    ("warehouses", _clear("warehouses")),
    ("request.metadata", _clear("request.metadata")),
    ("locks", _clear("locks")),
    ("picklists", _clear("picklists")),
    ("failure.shortages", _clear("failure.shortages")),
    ("compensation_failure", _clear("compensation_failure")),
    ("steps.error", _clear_step_errors),
    ("allocation.lines", _clear("allocation.lines")),
    ("request.items", _clear("request.items")),
    ("request.preferred_warehouses", _clear("request.preferred_warehouses")),
)


def summary(saga_id: str, request_id: str, status: int) -> pb.Saga:
    """A saga as CancelSaga and ResumeSaga answer it: which one, and its status."""
    return pb.Saga(saga_id=saga_id, request_id=request_id, status=status, omitted_fields=["*"])


def fit(saga: pb.Saga, budget: int = SAGA_BYTES) -> pb.Saga:
    """``saga`` (changed in place) within ``budget`` bytes, its largest parts left out if need be.

    Whatever is left out is named in ``omitted_fields``, so that a client never mistakes a
    part missing from the answer for one missing from the saga. A stored saga is never
    changed: this shapes one reply.
    """
    size = saga.ByteSize()
    if size <= budget:
        return saga
    for path, clear in OMISSIONS:
        clear(saga)
        smaller = saga.ByteSize()
        if smaller < size:
            saga.omitted_fields.append(path)
            size = smaller
        if size <= budget:
            return saga
    whole = summary(saga.saga_id, saga.request_id, saga.status)  # ids and text fields are bounded
    whole.created_at.CopyFrom(saga.created_at)
    whole.updated_at.CopyFrom(saga.updated_at)
    return whole


def list_filters(request: pb.ListSagasRequest) -> SagaFilters:
    """ListSagas' filters, checked: each bounded, the time range in order."""
    v = Violations()
    for name in ("order_id", "customer_id"):
        if len(getattr(request, name)) > validation.MAX_TEXT:
            v.add(name, f"at most {validation.MAX_TEXT} characters")
    if request.reservation_state not in common_pb2.ReservationState.values():
        v.add("reservation_state", f"unknown reservation state {request.reservation_state}")
    if request.kind not in pb.SagaKind.values():
        v.add("kind", f"unknown saga kind {request.kind}")
    after = lifecycle.ms(request.created_after) if request.HasField("created_after") else None
    before = lifecycle.ms(request.created_before) if request.HasField("created_before") else None
    if after is not None and before is not None and after > before:
        v.add("created_after", "must not be later than created_before")
    v.raise_if_any("invalid filter")
    return SagaFilters(
        order_id=request.order_id,
        customer_id=request.customer_id,
        created_after=after,
        created_before=before,
        reservation_state=request.reservation_state,
        kind=request.kind,
    )


def ends_reservation(ev: pb.SagaEvent) -> bool:
    """An event after which a followed stream may end: the saga's terminal event, or its
    reservation's end."""
    if ev.type in TERMINAL_EVENTS:
        return True
    return (
        ev.type == pb.SAGA_EVENT_TYPE_RESERVATION_CHANGED
        and not ev.warehouse_id
        and ev.reservation_state in lifecycle.ENDED
    )


def tenant_scope() -> str | None:
    """The tenant whose sagas the caller may see and change; None: every saga.

    A caller with a tenant (an API token bound to one) is scoped to it unless it is an
    admin; an admin, or a caller without a tenant (an unscoped API token, an open mesh),
    sees every saga.
    """
    who = security.caller()
    if who.is_admin or not who.tenant:
        return None
    return who.tenant


def not_found(saga_id: str) -> NotFound:
    # The same answer for a saga of another tenant as for one that does not exist.
    return NotFound(f"saga {saga_id!r} not found", reason="SAGA_NOT_FOUND")


def resolve_address(address: str):
    from invsaga.domain.geo import UnknownAddress, resolve

    try:
        return resolve(address)
    except UnknownAddress as err:
        raise ValueError(str(err)) from None


def require_id(saga_id: str) -> None:
    if not saga_id:
        raise InvalidArgument("saga_id is required", violations=[("saga_id", "required")])
    if len(saga_id) > 64:
        raise InvalidArgument("saga_id is too long", violations=[("saga_id", "at most 64 characters")])


EVENT_TYPES = frozenset(pb.SagaEventType.values()) - {pb.SAGA_EVENT_TYPE_UNSPECIFIED}


def event_types_of(types) -> frozenset[int] | None:
    """WatchSaga's ``event_types`` as a set (None: every event); unknown values are refused."""
    if not types:
        return None
    bad = [t for t in types if t not in EVENT_TYPES]
    if bad:
        raise InvalidArgument("unknown event type", violations=[("event_types", f"unknown saga event type {bad[0]}")])
    return frozenset(types)
