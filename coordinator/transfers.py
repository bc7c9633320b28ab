"""StartTransfer's input rules and the transfer's record on its saga (SPEC §10).

A transfer is a saga of kind TRANSFER. Its request is kept whole in ``Saga.transfer``; its
``Saga.request`` carries what every saga's columns and views read (request_id, request_type
TRANSFER, items, priority), so ListSagas, GetSaga and WatchSaga treat it as any saga.
"""

from __future__ import annotations

import hashlib
import time

from coordinator import lifecycle
from coordinator.commands import event
from coordinator.validation import DEFAULT_PRIORITY, MAX_TEXT, check_items
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.errors import Violations

MAX_WAREHOUSE_ID = 64

# The transfer's state while its outbound picklist decides it: the reservation it holds at the
# source (one warehouse, one picklist) read as a transfer. A completed picklist is stock on the
# road; RECEIVED and RECEIVED_SHORT come from ReceiveTransfer only, and stay.
FROM_RESERVATION = {
    common_pb2.RESERVATION_STATE_RESERVED: pb.TRANSFER_STATE_RESERVED,
    common_pb2.RESERVATION_STATE_PICKING: pb.TRANSFER_STATE_PICKING,
    common_pb2.RESERVATION_STATE_FULFILLED: pb.TRANSFER_STATE_IN_TRANSIT,
    common_pb2.RESERVATION_STATE_PARTIALLY_FULFILLED: pb.TRANSFER_STATE_IN_TRANSIT,
    common_pb2.RESERVATION_STATE_RELEASED: pb.TRANSFER_STATE_CANCELLED,
    common_pb2.RESERVATION_STATE_EXPIRED: pb.TRANSFER_STATE_CANCELLED,
}
RECEIVED_STATES = (pb.TRANSFER_STATE_RECEIVED, pb.TRANSFER_STATE_RECEIVED_SHORT)


def normalize(t: pb.TransferRequest) -> pb.TransferRequest:
    """Validate ``t`` (every violation at once: INVALID_ARGUMENT, nothing persisted) and fill
    in its defaults, in place."""
    v = Violations()
    if len(t.request_id) > MAX_TEXT:
        v.add("transfer.request_id", f"at most {MAX_TEXT} characters")
    for name in ("from_warehouse", "to_warehouse"):
        value = getattr(t, name)
        if not value:
            v.add(f"transfer.{name}", "required")
        elif len(value) > MAX_WAREHOUSE_ID:
            v.add(f"transfer.{name}", f"at most {MAX_WAREHOUSE_ID} characters")
    if t.from_warehouse and t.from_warehouse == t.to_warehouse:
        v.add("transfer.to_warehouse", "must differ from from_warehouse")
    check_items(t.items, "transfer.items", v)
    if len(t.reason) > MAX_TEXT:
        v.add("transfer.reason", f"at most {MAX_TEXT} characters")
    if t.HasField("expected_arrival"):
        if t.expected_arrival.seconds < 0 or t.expected_arrival.ToNanoseconds() <= time.time_ns():
            v.add("transfer.expected_arrival", "must be in the future")
    if t.priority == 0:
        t.priority = DEFAULT_PRIORITY
    elif not 1 <= t.priority <= 10:
        v.add("transfer.priority", "must be within 1-10")
    v.raise_if_any("invalid transfer")
    return t


def request_of(t: pb.TransferRequest) -> pb.InventoryRequest:
    """The saga's ``request`` for a transfer: what the saga columns and views read."""
    return pb.InventoryRequest(
        request_id=t.request_id, request_type=pb.REQUEST_TYPE_TRANSFER, items=t.items, priority=t.priority
    )


def transfer_hash(t: pb.TransferRequest) -> str:
    """The idempotency hash of a transfer; never equal to a reservation's (a prefix apart)."""
    return hashlib.sha256(b"transfer:" + t.SerializeToString(deterministic=True)).hexdigest()


def state_name(state: int) -> str:
    return pb.TransferState.Name(state).removeprefix("TRANSFER_STATE_")


def transfer_event(saga: pb.Saga, seq: int) -> pb.SagaEvent:
    return event(saga, seq, pb.SAGA_EVENT_TYPE_TRANSFER_CHANGED, reason=state_name(saga.transfer_state))


def follow(saga: pb.Saga) -> None:
    """The transfer's state from its reservation, once received no more."""
    if saga.kind != pb.SAGA_KIND_TRANSFER or not saga.HasField("reservation"):
        return
    if saga.transfer_state in RECEIVED_STATES:
        return
    saga.transfer_state = FROM_RESERVATION.get(saga.reservation.state, saga.transfer_state)


def opened(saga: pb.Saga, seq: int) -> list[pb.SagaEvent]:
    """A completed transfer holds its source's stock as a reservation does (one picklist, its
    locks), but it does not expire: goods between warehouses wait for their pickers."""
    lifecycle.open_reservation(saga)
    saga.reservation.ClearField("expires_at")
    follow(saga)
    return [
        lifecycle.reservation_event(saga, seq, pb.SAGA_EVENT_TYPE_RESERVATION_CHANGED, saga.reservation.state),
        transfer_event(saga, seq + 1),
    ]


def received(saga: pb.Saga, lines: list[common_pb2.TransferLine]) -> None:
    """What the destination booked: RECEIVED, or RECEIVED_SHORT if any line arrived short."""
    del saga.transfer_lines[:]
    saga.transfer_lines.extend(lines)
    short = any(line.status == common_pb2.TRANSFER_LINE_STATUS_RECEIVED_SHORT for line in lines)
    saga.transfer_state = pb.TRANSFER_STATE_RECEIVED_SHORT if short else pb.TRANSFER_STATE_RECEIVED
