"""The reservation a COMPLETED saga holds, after the saga (SPEC §9).

A COMPLETED saga holds stock for its order: one picklist and its locks per warehouse. From then
on each warehouse's part, and the order as a whole, goes RESERVED -> PICKING -> FULFILLED, or
ends RELEASED (cancelled before picking) or EXPIRED (its time ran out before picking); an order
some of whose warehouses were fulfilled and the rest released or expired ends
PARTIALLY_FULFILLED. The state lives in the saga (``Saga.reservation``, GetSaga shows it), each
change is an event (``RESERVATION_CHANGED``), and two columns beside the blob serve ListSagas'
filter and the sweep below.

The keeper (``coordinator.keeper``) moves reservations on; this module holds the states and
the pure functions over them.
"""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.notices import clip_text, notice_text
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.notify.v1 import notify_pb2


RESERVED = common_pb2.RESERVATION_STATE_RESERVED
PICKING = common_pb2.RESERVATION_STATE_PICKING
FULFILLED = common_pb2.RESERVATION_STATE_FULFILLED
RELEASED = common_pb2.RESERVATION_STATE_RELEASED
EXPIRED = common_pb2.RESERVATION_STATE_EXPIRED
PARTIALLY_FULFILLED = common_pb2.RESERVATION_STATE_PARTIALLY_FULFILLED
OPEN = frozenset({RESERVED, PICKING})
ENDED = frozenset({FULFILLED, RELEASED, EXPIRED, PARTIALLY_FULFILLED})
# After the saga: the reservation's changes, and a transfer's (sent after the terminal event only
# to a watcher that follows the reservation).
LIFECYCLE_EVENTS = frozenset(
    {
        pb.SAGA_EVENT_TYPE_RESERVATION_CHANGED,
        pb.SAGA_EVENT_TYPE_RESERVATION_EXTENDED,
        pb.SAGA_EVENT_TYPE_TRANSFER_CHANGED,
    }
)

PENDING_LIST = common_pb2.PICKLIST_STATUS_PENDING
PROCESSING_LIST = common_pb2.PICKLIST_STATUS_PROCESSING
COMPLETED_LIST = common_pb2.PICKLIST_STATUS_COMPLETED
CANCELLED_LIST = common_pb2.PICKLIST_STATUS_CANCELLED


def now_ts() -> Timestamp:
    ns = time.time_ns()
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def reservation_event(saga: pb.Saga, seq: int, type_: int, state: int, warehouse_id: str = "") -> pb.SagaEvent:
    return pb.SagaEvent(
        seq=seq,
        type=type_,
        status=saga.status,
        time=now_ts(),
        saga_id=saga.saga_id,
        reservation_state=state,
        warehouse_id=warehouse_id,
    )


def state_name(state: int) -> str:
    return common_pb2.ReservationState.Name(state).removeprefix("RESERVATION_STATE_")


def ms(ts: Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


# -- the state, pure ----------------------------------------------------------------------------


def open_reservation(saga: pb.Saga) -> None:
    """The reservation of a saga that just COMPLETED: every warehouse RESERVED until the locks'
    expiry (the earliest lock's, else the allocation's)."""
    r = saga.reservation
    r.Clear()
    now = now_ts()
    expiries = [lock.expires_at for lock in saga.locks if lock.HasField("expires_at")]
    if expiries:
        r.expires_at.CopyFrom(min(expiries, key=ms))
    elif saga.allocation.HasField("expires_at"):
        r.expires_at.CopyFrom(saga.allocation.expires_at)
    for picklist in saga.picklists:
        r.warehouses.add(
            warehouse_id=picklist.warehouse_id,
            picklist_id=picklist.picklist_id,
            state=RESERVED,
            picklist_status=PENDING_LIST,
            updated_at=now,
        )
    r.state = overall(r)
    r.updated_at.CopyFrom(now)


def overall(r: pb.Reservation) -> int:
    """The order's state from its warehouses' states."""
    states = [w.state for w in r.warehouses]
    if not states:
        return RELEASED
    if any(s in OPEN for s in states):
        return PICKING if any(s in (PICKING, FULFILLED) for s in states) else RESERVED
    if all(s == FULFILLED for s in states):
        return FULFILLED
    if any(s == FULFILLED for s in states):
        return PARTIALLY_FULFILLED
    return RELEASED if any(s == RELEASED for s in states) else EXPIRED


def _rank(state: int) -> int:
    return {RESERVED: 0, PICKING: 1}.get(state, 2)


def apply_picklist(r: pb.Reservation, picklist_id: str, status: int, when: Timestamp | None = None) -> bool:
    """A picklist's new status, as logistics reported it; True if a warehouse's state changed.

    States only move forward (a late PROCESSING after COMPLETED changes nothing) and an ended
    warehouse stays as it ended. A CANCELLED picklist ends as what the release under way says
    (``releasing``), RELEASED when none is (an operator cancelled it by hand).
    """
    target = {
        PENDING_LIST: RESERVED,
        PROCESSING_LIST: PICKING,
        COMPLETED_LIST: FULFILLED,
        CANCELLED_LIST: r.releasing or RELEASED,
    }.get(status)
    if target is None:
        return False
    for w in r.warehouses:
        if w.picklist_id != picklist_id:
            continue
        if w.state in ENDED or _rank(target) <= _rank(w.state):
            return False
        w.state, w.picklist_status = target, status
        w.updated_at.CopyFrom(when or now_ts())
        return True
    return False


def settle_status(r: pb.Reservation) -> int:
    """How the allocation of an ended reservation ends."""
    if any(w.state == FULFILLED for w in r.warehouses):
        return common_pb2.ALLOCATION_STATUS_FULFILLED
    if r.state == EXPIRED:
        return common_pb2.ALLOCATION_STATUS_EXPIRED
    return common_pb2.ALLOCATION_STATUS_CANCELLED


def next_look_ms(r: pb.Reservation) -> int | None:
    """``reservation_expires_at``: when the sweep must next look at the reservation (0: at once,
    to settle an ended one), None once there is nothing left to do."""
    if r.state in ENDED:
        return None if r.allocation_settled else 0
    if any(w.state == RESERVED for w in r.warehouses) and r.HasField("expires_at"):
        return ms(r.expires_at)
    return None


def changes(before: pb.Reservation, after: pb.Reservation) -> list[tuple[str, int]]:
    """(warehouse_id or '' for the order, new state) for each state that changed."""
    old = {w.picklist_id: w.state for w in before.warehouses}
    found = [(w.warehouse_id, w.state) for w in after.warehouses if old.get(w.picklist_id) != w.state]
    if after.state != before.state:
        found.append(("", after.state))
    return found


def notice_for(saga: pb.Saga) -> notify_pb2.ExecuteRequest | None:
    """The one notice of an ended reservation: cancelled or expired; none for a fulfilled one."""
    r, request = saga.reservation, saga.request
    states = {w.state for w in r.warehouses}
    if EXPIRED in states:
        kind, head = common_pb2.NOTIFICATION_KIND_RESERVATION_EXPIRED, "reservation expired for order "
        tail = ": its stock was released before picking started"
    elif RELEASED in states:
        kind, head = common_pb2.NOTIFICATION_KIND_RESERVATION_CANCELLED, "reservation cancelled for order "
        tail = ": its stock was released" + (" (the picked part stays)" if FULFILLED in states else "")
    else:
        return None
    reason = saga.cancel_reason if kind == common_pb2.NOTIFICATION_KIND_RESERVATION_CANCELLED else ""
    if saga.kind == pb.SAGA_KIND_TRANSFER:  # no customer: the ops channel hears of it
        kind, head, tail = common_pb2.NOTIFICATION_KIND_TRANSFER_FAILED, "transfer cancelled: ", " (released at source)"
        request = pb.InventoryRequest(order_id=saga.request_id)
    return notify_pb2.ExecuteRequest(
        context=common_pb2.StepContext(
            saga_id=saga.saga_id,
            step=common_pb2.SAGA_STEP_NOTIFY_RESERVATION,
            idempotency_key=f"{saga.saga_id}:{common_pb2.SAGA_STEP_NOTIFY_RESERVATION}",
        ),
        notify=notify_pb2.NotifyInput(
            kind=kind,
            order_id=clip_text(request.order_id),
            customer_id=clip_text(request.customer_id),
            message=notice_text(head, request.order_id, tail, f" ({reason})" if reason else ""),
            attributes={
                "saga_id": saga.saga_id,
                "reservation": state_name(r.state),
                "warehouses": clip_text(
                    ",".join(w.warehouse_id for w in r.warehouses if w.state in (RELEASED, EXPIRED))
                ),
            },
        ),
    )
