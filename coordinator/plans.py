"""StartSaga's check of the plan a reservation confirms (``InventoryRequest.allocation_id``),
before anything is persisted (SPEC §4, REQUEST_TYPE_ALLOCATION).

The plan is an ALLOCATION saga's allocation, stored by the allocation service: it must be
one of the caller's, still ACTIVE and unexpired, plan exactly the items asked for, and each of
its lines must still be available where it was planned. Reads only (GetAllocation, GetStock,
each with a deadline); the saga's AllocateInventory and LockInventory check again where the
plan is used and the units are taken.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from coordinator import stock_reads
from invsaga.allocation.v1 import allocation_pb2, allocation_pb2_grpc
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.errors import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from coordinator.journal import Journal


async def check(request: pb.InventoryRequest, channels, journal: "Journal", tenant: str | None) -> None:
    plan_id = request.allocation_id
    meta = {"allocation_id": plan_id}
    stub = allocation_pb2_grpc.AllocationServiceStub(channels["allocation"])
    get = allocation_pb2.GetAllocationRequest(allocation_id=plan_id)
    unavailable = "the allocation service could not check allocation_id; try again"
    reply = await stock_reads.read(stub.GetAllocation(get, timeout=stock_reads.READ_TIMEOUT), unavailable)
    plan = None if reply is None else reply.allocation
    made_by = None if plan is None else await journal.load(plan.saga_id, tenant)
    if plan is None or made_by is None or made_by.saga.request.request_type != pb.REQUEST_TYPE_ALLOCATION:
        raise InvalidArgument(
            f"unknown allocation {plan_id!r}",
            reason="ALLOCATION_NOT_FOUND",
            metadata=meta,
            violations=[("allocation_id", f"no ALLOCATION saga planned {plan_id!r}")],
        )
    if plan.status != common_pb2.ALLOCATION_STATUS_ACTIVE:
        status = common_pb2.AllocationStatus.Name(plan.status).removeprefix("ALLOCATION_STATUS_")
        raise FailedPrecondition(
            f"allocation {plan_id!r} is {status}",
            reason="ALLOCATION_NOT_ACTIVE",
            metadata=meta,
            violations=[("allocation_id", f"the plan is {status}, not ACTIVE (a plan confirms one reservation)")],
        )
    if plan.expires_at.ToNanoseconds() <= time.time_ns():
        raise FailedPrecondition(
            f"allocation {plan_id!r} has expired",
            reason="ALLOCATION_EXPIRED",
            metadata=meta,
            violations=[("allocation_id", f"the plan expired at {plan.expires_at.ToJsonString()}")],
        )
    planned: dict[str, int] = {}
    for line in plan.lines:
        planned[line.sku] = planned.get(line.sku, 0) + line.quantity
    asked = {item.sku: item.quantity for item in request.items}
    if planned != asked:
        raise InvalidArgument(
            f"the items differ from allocation {plan_id!r}",
            reason="ALLOCATION_MISMATCH",
            metadata=meta,
            violations=[
                (f"items[{k}]", f"the plan has {planned.get(item.sku, 0)} of {item.sku!r}")
                for k, item in enumerate(request.items)
                if planned.get(item.sku) != item.quantity
            ]
            or [("items", "the plan covers other SKUs too")],
        )
    rows = [(line.warehouse_id, line.sku) for line in plan.lines]
    have = await stock_reads.available(
        channels["inventory"], rows, "the inventory service could not check allocation_id; try again"
    )
    short = [
        ("allocation_id", f"{line.warehouse_id} has {n} of {line.sku!r} available, the plan takes {line.quantity}")
        for line, n in zip(plan.lines, have)
        if n < line.quantity
    ]
    if short:
        raise FailedPrecondition(
            f"the stock no longer allows allocation {plan_id!r}",
            reason="INSUFFICIENT_INVENTORY",
            metadata=meta,
            violations=short,
        )
