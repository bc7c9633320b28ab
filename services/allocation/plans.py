"""A plan made earlier and reused (SPEC §4, REQUEST_TYPE_ALLOCATION): the checks that it still
holds, with no database in sight.

An ALLOCATION saga plans and stores its allocation without locking anything; a RESERVATION
naming that allocation (``plan_allocation_id``) takes its lines as they are, if the plan is
still active and unexpired, covers exactly the items asked for, and the stock the step is
given still has each line's units available.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from invsaga.allocation.v1 import allocation_pb2 as pb
from invsaga.common.v1 import common_pb2
from invsaga.runtime.convert import from_timestamp, to_timestamp
from invsaga.runtime.errors import FailedPrecondition
from services.allocation import logic
from services.common import fields, totals


def reuse(
    plan: common_pb2.Allocation | None,
    data: pb.AllocateInventoryInput,
    saga_id: str,
    now: datetime,
    expires_at: datetime,
) -> common_pb2.Allocation:
    """This saga's allocation: the plan's lines, or the reason they no longer do."""
    plan_id = data.plan_allocation_id
    meta = {"allocation_id": plan_id}
    if plan is None:
        raise FailedPrecondition(f"allocation {plan_id!r} not found", reason="ALLOCATION_NOT_FOUND", metadata=meta)
    if plan.status != common_pb2.ALLOCATION_STATUS_ACTIVE:
        status = common_pb2.AllocationStatus.Name(plan.status).removeprefix("ALLOCATION_STATUS_")
        raise FailedPrecondition(
            f"allocation {plan_id!r} is {status}, not ACTIVE", reason="ALLOCATION_NOT_ACTIVE", metadata=meta
        )
    if from_timestamp(plan.expires_at) <= now:
        raise FailedPrecondition(f"allocation {plan_id!r} has expired", reason="ALLOCATION_EXPIRED", metadata=meta)
    if totals((line.sku, line.quantity) for line in plan.lines) != {item.sku: item.quantity for item in data.items}:
        raise FailedPrecondition(
            f"allocation {plan_id!r} plans other items than these", reason="ALLOCATION_MISMATCH", metadata=meta
        )
    available = {(s.warehouse_id, s.sku): s.available for s in data.stock}
    held = [(line.sku, line.quantity, available.get((line.warehouse_id, line.sku), 0)) for line in plan.lines]
    short = [(sku, quantity, left) for sku, quantity, left in held if quantity > left]
    if short:
        raise FailedPrecondition(
            f"the stock no longer allows allocation {plan_id!r}",
            reason="INSUFFICIENT_INVENTORY",
            metadata={**meta, **logic.shortage_metadata(short)},
        )
    return common_pb2.Allocation(
        **fields(plan, "strategy lines optimal total_cost"),
        allocation_id=f"AL-{uuid.uuid4().hex}",
        saga_id=saga_id,
        expires_at=to_timestamp(expires_at),
        status=common_pb2.ALLOCATION_STATUS_ACTIVE,
    )
