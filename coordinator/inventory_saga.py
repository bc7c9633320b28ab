"""The inventory saga (the original design's InventorySaga) as a definition: its six steps.

Each step's input is built from the request and the results of earlier steps, which the saga
record holds; each participant learns only what the coordinator hands it (one-way data flow).
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from coordinator import lifecycle
from coordinator.definition import notice_steps, replacing, BusinessFailure, SagaDefinition, StepDef
from coordinator.failures import MAX_SHORTAGES
from coordinator.notices import clip_text, notice_text
from invsaga.allocation.v1 import allocation_pb2
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2
from invsaga.logistics.v1 import logistics_pb2
from invsaga.notify.v1 import notify_pb2
from invsaga.runtime.config import Settings
from invsaga.runtime.retry import ALL, TRANSPORT
from invsaga.warehouse.v1 import warehouse_pb2


def expiry(saga: pb.Saga, ttl_seconds: float) -> Timestamp:
    """min(now + ttl, request.expired_at)."""
    until = time.time_ns() + int(ttl_seconds * 1_000_000_000)
    if saga.request.HasField("expired_at"):
        at = saga.request.expired_at
        until = min(until, at.seconds * 1_000_000_000 + at.nanos)
    return Timestamp(seconds=until // 1_000_000_000, nanos=until % 1_000_000_000)


def insufficient(step: str, message: str, shortages: Any) -> BusinessFailure:
    return BusinessFailure(
        pb.SagaFailure(
            step=step,
            code=grpc.StatusCode.FAILED_PRECONDITION.name,
            reason="INSUFFICIENT_INVENTORY",
            message=message,
            shortages=shortages,
        )
    )


# -- QueryWarehouses -------------------------------------------------------------------
def build_query(saga: pb.Saga, settings: Settings) -> Any:
    request = saga.request
    return warehouse_pb2.QueryWarehousesInput(
        skus=[i.sku for i in request.items], preferred_warehouses=request.preferred_warehouses
    )


def apply_query(saga: pb.Saga, out: Any) -> None:
    saga.warehouses.extend(out.warehouses)
    if not saga.warehouses:
        shortages = [common_pb2.Shortage(sku=i.sku, required=i.quantity, available=0) for i in saga.request.items]
        raise insufficient("QueryWarehouses", "no active warehouse carries the requested SKUs", shortages)


# -- CheckAvailability -----------------------------------------------------------------
def build_check(saga: pb.Saga, settings: Settings) -> Any:
    return inventory_pb2.CheckAvailabilityInput(
        items=saga.request.items, warehouse_ids=[w.warehouse_id for w in saga.warehouses]
    )


def apply_check(saga: pb.Saga, out: Any) -> None:
    saga.availability.CopyFrom(pb.Availability(stock=out.stock, loads=out.loads, shortages=out.shortages))
    if out.shortages or not out.sufficient:
        short = ", ".join(f"{s.sku} needs {s.required}, has {s.available}" for s in out.shortages)
        # The answer's shortage list is kept with the saga too: bounded like the failure's.
        del saga.availability.shortages[MAX_SHORTAGES:]
        raise insufficient("CheckAvailability", f"insufficient inventory across warehouses: {short}", out.shortages)


# -- AllocateInventory -----------------------------------------------------------------
def build_allocate(saga: pb.Saga, settings: Settings) -> Any:
    request = saga.request
    return allocation_pb2.AllocateInventoryInput(
        items=request.items,
        strategy=request.allocation_strategy,
        preferred_warehouses=request.preferred_warehouses,
        warehouses=saga.warehouses,
        stock=saga.availability.stock,
        loads=saga.availability.loads,
        customer_location=request.customer_location,
        expires_at=expiry(saga, settings.saga.expiry.allocation),
        order_id=request.order_id,
        plan_allocation_id=request.allocation_id,
    )


def apply_allocate(saga: pb.Saga, out: Any) -> None:
    saga.allocation.CopyFrom(out.allocation)


# -- LockInventory ---------------------------------------------------------------------
def build_lock(saga: pb.Saga, settings: Settings) -> Any:
    # The capacities QueryWarehouses found, of the warehouses the lock touches: the plan
    # fitted them when it was made, but a concurrent saga may have locked there since, so
    # inventory checks them again where the units are taken (SPEC §9).
    planned = {line.warehouse_id for line in saga.allocation.lines}
    return inventory_pb2.LockInventoryInput(
        allocation_id=saga.allocation.allocation_id,
        lines=saga.allocation.lines,
        expires_at=expiry(saga, settings.saga.expiry.lock),
        order_id=saga.request.order_id,
        capacities={w.warehouse_id: w.capacity for w in saga.warehouses if w.warehouse_id in planned},
    )


# -- GeneratePicklist ------------------------------------------------------------------
def build_picklist(saga: pb.Saga, settings: Settings) -> Any:
    request = saga.request
    bins = {(s.warehouse_id, s.sku): s.bin for s in saga.availability.stock}
    return logistics_pb2.GeneratePicklistInput(
        order_id=request.order_id,
        priority=request.priority,
        is_urgent=request.is_urgent,
        lines=[
            logistics_pb2.PickRequestLine(
                warehouse_id=line.warehouse_id,
                sku=line.sku,
                quantity=line.quantity,
                bin=bins.get((line.warehouse_id, line.sku), ""),
            )
            for line in saga.allocation.lines
        ],
    )


# -- Notify ----------------------------------------------------------------------------
def notify_input(saga: pb.Saga, confirmed: bool) -> notify_pb2.NotifyInput:
    """The notice of a saga's outcome, each field within the notify service's limits."""
    request = saga.request
    if confirmed:
        units = sum(line.quantity for line in saga.allocation.lines)
        warehouses = sorted({line.warehouse_id for line in saga.allocation.lines})
        return notify_pb2.NotifyInput(
            kind=common_pb2.NOTIFICATION_KIND_RESERVATION_CONFIRMED,
            order_id=clip_text(request.order_id),
            customer_id=clip_text(request.customer_id),
            message=notice_text(
                "reservation confirmed for order ", request.order_id, f": {units} units from {', '.join(warehouses)}"
            ),
            attributes={"saga_id": saga.saga_id, "warehouses": clip_text(",".join(warehouses)), "units": str(units)},
        )
    failure = saga.failure
    cancelled = failure.reason == "CANCELLED"  # asked for: not a failure to the customer
    return notify_pb2.NotifyInput(
        kind=common_pb2.NOTIFICATION_KIND_RESERVATION_CANCELLED
        if cancelled
        else common_pb2.NOTIFICATION_KIND_RESERVATION_FAILED,
        order_id=clip_text(request.order_id),
        customer_id=clip_text(request.customer_id),
        message=notice_text(
            "reservation cancelled for order " if cancelled else "reservation failed for order ",
            request.order_id,
            (f": {saga.cancel_reason}" if saga.cancel_reason else "")
            if cancelled
            else f": {failure.reason or failure.code}",
            "" if cancelled else (f" {failure.message}" if failure.message else ""),
        ),
        attributes={
            "saga_id": saga.saga_id,
            "reason": clip_text(failure.reason),
            "step": clip_text(failure.step),
            "status": pb.SagaStatus.Name(saga.status),
        },
    )


def opened(saga: pb.Saga, seq: int) -> list[pb.SagaEvent]:
    """The reservation starts with the saga's end: its first state comes before the terminal
    event, so that a watcher that stops there sees it too."""
    lifecycle.open_reservation(saga)
    return [lifecycle.reservation_event(saga, seq, pb.SAGA_EVENT_TYPE_RESERVATION_CHANGED, saga.reservation.state)]


CHECK_RETRYABLE = TRANSPORT | {grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
NOTIFY, NOTIFY_FAILURE = notice_steps(notify_input)
# The two steps that change stock; the transfer saga runs them too, at its source.
LOCK_INVENTORY = StepDef(
    "LockInventory",
    "lock_inventory",
    "inventory",
    common_pb2.SAGA_STEP_LOCK_INVENTORY,
    True,
    TRANSPORT | {grpc.StatusCode.ABORTED},
    build_lock,
    replacing("locks"),
)
GENERATE_PICKLIST = StepDef(
    "GeneratePicklist",
    "generate_picklist",
    "logistics",
    common_pb2.SAGA_STEP_GENERATE_PICKLIST,
    True,
    ALL,
    build_picklist,
    replacing("picklists"),
)
STEPS: tuple[StepDef, ...] = (
    StepDef(
        "QueryWarehouses",
        "query_warehouses",
        "warehouse",
        common_pb2.SAGA_STEP_QUERY_WAREHOUSES,
        False,
        TRANSPORT,
        build_query,
        apply_query,
    ),
    StepDef(
        "CheckAvailability",
        "check_availability",
        "inventory",
        common_pb2.SAGA_STEP_CHECK_AVAILABILITY,
        False,
        CHECK_RETRYABLE,
        build_check,
        apply_check,
    ),
    StepDef(
        "AllocateInventory",
        "allocate_inventory",
        "allocation",
        common_pb2.SAGA_STEP_ALLOCATE_INVENTORY,
        True,
        TRANSPORT,
        build_allocate,
        apply_allocate,
    ),
    LOCK_INVENTORY,
    GENERATE_PICKLIST,
    NOTIFY,
)
INVENTORY_SAGA = SagaDefinition(
    "inventory", STEPS, failure_notice=NOTIFY_FAILURE, on_completed=opened, kind=pb.SAGA_KIND_RESERVATION
)
# REQUEST_TYPE_ALLOCATION: "where would this ship from, and at what cost?" The plan is made and
# stored (with its expiry) by the allocation service, and nothing is locked: the saga ends
# COMPLETED with its allocation, which a later RESERVATION may confirm (``allocation_id``).
ALLOCATION_SAGA = SagaDefinition("allocation", STEPS[:3], kind=pb.SAGA_KIND_RESERVATION)
