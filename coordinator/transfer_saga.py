"""The transfer saga (the original design's TransferSaga, SPEC §10) as a definition: five steps.

Stock moves from one warehouse (the source) to another (the destination): both are checked,
the units are locked at the source as any reservation's are, an outbound picklist
(TRANSFER_OUT) is made there, the destination expects them (``incoming``, never available
until received), and ops are told. A rollback undoes them in reverse, each once, through the
participants' barriers. What happens after the saga (shipping, receipt) is the transfer's
lifecycle (``coordinator.transfers``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from coordinator import transfers
from coordinator.definition import notice_steps, SagaDefinition, StepDef
from coordinator.inventory_saga import GENERATE_PICKLIST, LOCK_INVENTORY, expiry
from coordinator.notices import clip_text, notice_text
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2
from invsaga.logistics.v1 import logistics_pb2
from invsaga.notify.v1 import notify_pb2
from invsaga.runtime.config import Settings
from invsaga.runtime.retry import TRANSPORT
from invsaga.warehouse.v1 import warehouse_pb2


# -- ValidateTransfer ------------------------------------------------------------------
def build_validate(saga: pb.Saga, settings: Settings) -> Any:
    t = saga.transfer
    return warehouse_pb2.ValidateTransferInput(
        from_warehouse=t.from_warehouse, to_warehouse=t.to_warehouse, skus=[i.sku for i in t.items]
    )


def apply_validate(saga: pb.Saga, out: Any) -> None:
    del saga.warehouses[:]
    saga.warehouses.extend([out.source, out.destination])


# -- ReserveAtSource (a LockInventory at the source) -----------------------------------
def build_reserve(saga: pb.Saga, settings: Settings) -> Any:
    t = saga.transfer
    capacities = {w.warehouse_id: w.capacity for w in saga.warehouses if w.warehouse_id == t.from_warehouse}
    return inventory_pb2.LockInventoryInput(
        lines=[
            common_pb2.AllocationLine(warehouse_id=t.from_warehouse, sku=i.sku, quantity=i.quantity) for i in t.items
        ],
        expires_at=expiry(saga, settings.saga.expiry.lock),
        order_id=saga.request_id,
        capacities=capacities,
    )


# -- OutboundPicklist (a GeneratePicklist of kind TRANSFER_OUT) ------------------------
def build_picklist(saga: pb.Saga, settings: Settings) -> Any:
    t = saga.transfer
    return logistics_pb2.GeneratePicklistInput(
        order_id=saga.request_id,
        priority=saga.request.priority,
        kind=common_pb2.PICKLIST_KIND_TRANSFER_OUT,
        lines=[
            logistics_pb2.PickRequestLine(warehouse_id=t.from_warehouse, sku=i.sku, quantity=i.quantity)
            for i in t.items
        ],
    )


# -- ExpectAtDestination ---------------------------------------------------------------
def build_expect(saga: pb.Saga, settings: Settings) -> Any:
    t = saga.transfer
    return inventory_pb2.ExpectTransferInput(
        from_warehouse=t.from_warehouse,
        to_warehouse=t.to_warehouse,
        items=t.items,
        expected_arrival=t.expected_arrival if t.HasField("expected_arrival") else None,
    )


# -- Notify ----------------------------------------------------------------------------
def notify_input(saga: pb.Saga, confirmed: bool) -> notify_pb2.NotifyInput:
    t = saga.transfer
    units = sum(i.quantity for i in t.items)
    route = f" ({units} units, {t.from_warehouse} -> {t.to_warehouse})"
    attributes = {
        "saga_id": saga.saga_id,
        "from_warehouse": t.from_warehouse,
        "to_warehouse": t.to_warehouse,
        "units": str(units),
    }
    if confirmed:
        return notify_pb2.NotifyInput(
            kind=common_pb2.NOTIFICATION_KIND_TRANSFER_CONFIRMED,
            order_id=clip_text(saga.request_id),
            message=notice_text("transfer ", saga.request_id, f" reserved{route}"),
            attributes=attributes,
        )
    failure = saga.failure
    detail = saga.cancel_reason if failure.reason == "CANCELLED" else failure.message
    return notify_pb2.NotifyInput(
        kind=common_pb2.NOTIFICATION_KIND_TRANSFER_FAILED,
        order_id=clip_text(saga.request_id),
        message=notice_text("transfer ", saga.request_id, f" failed{route}: {failure.reason or failure.code}", detail),
        attributes={**attributes, "reason": clip_text(failure.reason), "step": clip_text(failure.step)},
    )


NOTIFY, NOTIFY_FAILURE = notice_steps(notify_input)
STEPS: tuple[StepDef, ...] = (
    StepDef(
        "ValidateTransfer",
        "validate_transfer",
        "warehouse",
        common_pb2.SAGA_STEP_VALIDATE_TRANSFER,
        False,
        TRANSPORT,
        build_validate,
        apply_validate,
    ),
    # Short stock at the source is a business failure: not retried, the saga rolls back.
    replace(LOCK_INVENTORY, name="ReserveAtSource", retryable=TRANSPORT, build=build_reserve),
    replace(GENERATE_PICKLIST, name="OutboundPicklist", build=build_picklist),
    StepDef(
        "ExpectAtDestination",
        "expect_transfer",
        "inventory",
        common_pb2.SAGA_STEP_EXPECT_TRANSFER,
        True,
        TRANSPORT,
        build_expect,
    ),
    NOTIFY,
)
TRANSFER_SAGA = SagaDefinition(
    "transfer", STEPS, failure_notice=NOTIFY_FAILURE, on_completed=transfers.opened, kind=pb.SAGA_KIND_TRANSFER
)
