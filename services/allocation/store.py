"""All of the allocation service's SQL: the step's effects, the operators' reads and cancels,
and the expiry sweep, as plain SQL text on the service's ``Database``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from invsaga.allocation.v1 import allocation_pb2 as pb
from invsaga.common.v1 import common_pb2
from invsaga.runtime.barrier import COMPENSATE, EXECUTE, Barrier, Effect, Reader, Refused
from invsaga.runtime.convert import from_timestamp, to_timestamp, utcnow
from invsaga.runtime.db import Database
from invsaga.runtime.errors import FailedPrecondition
from services.allocation import logic
from services.common import fields, found, matching

_STRATEGY_TO_DB = {value: name for name, value in logic.STRATEGY_VALUES.items()}

# Execute: the allocation and its lines are data-modifying CTEs of the barrier's one
# statement (the lines' foreign key is checked at the end of the statement, when the
# allocation is there), constant text that psycopg prepares once for any number of lines. A
# racing duplicate already fails here, on the unique saga_id, like on the barrier row's key:
# the stored row answers it either way.
_INSERT_CTES = (
    "allocation AS ("
    " INSERT INTO allocations (allocation_id, saga_id, order_id, strategy, status, total_cost, optimal,"
    " expires_at, created_at, updated_at)"
    " VALUES (%(allocation_id)s, %(saga_id)s, %(order_id)s, %(strategy)s, 'active', %(total_cost)s, %(optimal)s,"
    " %(expires_at)s, %(now)s, %(now)s)),"
    " lines AS (INSERT INTO allocation_lines (allocation_id, warehouse_id, sku, quantity)"
    " SELECT %(allocation_id)s, line.warehouse_id, line.sku, line.quantity"
    " FROM unnest(%(warehouse_ids)s::varchar[], %(skus)s::varchar[], %(quantities)s::bigint[])"
    " AS line(warehouse_id, sku, quantity))"
)
# A plan reused by a reservation (``plan_allocation_id``) is used up with the reservation's own
# allocation: one statement, so a plan confirms one reservation only.
_USE_PLAN_CTE = (
    ", used AS (UPDATE allocations SET status = 'fulfilled', updated_at = %(now)s"
    " WHERE allocation_id = %(plan_id)s AND status = 'active' RETURNING 1)"
)
# The plan was used up by another reservation in between: nothing of this one commits.
_PLAN_UNUSED_GUARD = "(SELECT count(*) FROM used) = 1"
# Compensate: an allocation that already expired stays expired (both mean "no longer in force").
_CANCEL_CTE = (
    "cancel AS (UPDATE allocations SET status = 'cancelled', updated_at = %(now)s"
    " WHERE saga_id = %(saga_id)s AND status = 'active')"
)

# A page of allocations is one query: each row carries its lines as JSON.
_ALLOCATIONS = (
    "SELECT allocation_id, saga_id, strategy, status, total_cost, optimal, expires_at,"
    " (SELECT coalesce(json_agg(json_build_object('warehouse_id', l.warehouse_id, 'sku', l.sku, 'quantity', l.quantity)"
    " ORDER BY l.warehouse_id, l.sku), '[]') FROM allocation_lines l WHERE l.allocation_id = a.allocation_id) AS lines"
    " FROM allocations a"
)
_BY_ID = _ALLOCATIONS + " WHERE allocation_id = %s"
_PAGE = " ORDER BY created_at, allocation_id OFFSET %(offset)s LIMIT %(limit)s"
# A change of an active allocation: its status (cancel, settle) or expires_at (extend).
_CHANGE_ACTIVE = "UPDATE allocations SET {} = %s, updated_at = %s WHERE allocation_id = %s AND status = 'active'"


def _to_proto(row: Any) -> common_pb2.Allocation:
    return common_pb2.Allocation(
        **fields(row, "allocation_id saga_id optimal total_cost"),
        strategy=logic.STRATEGY_VALUES[row.strategy],
        lines=[common_pb2.AllocationLine(**line) for line in row.lines],
        expires_at=to_timestamp(row.expires_at),
        status=logic.STATUS_FROM_DB[row.status],
    )


def _insert_params(allocation: common_pb2.Allocation, order_id: str, now: datetime) -> dict[str, Any]:
    return {
        **fields(allocation, "allocation_id saga_id total_cost optimal"),
        "order_id": order_id,
        "strategy": _STRATEGY_TO_DB[allocation.strategy],
        "expires_at": from_timestamp(allocation.expires_at),
        "now": now,
        "warehouse_ids": [line.warehouse_id for line in allocation.lines],
        "skus": [line.sku for line in allocation.lines],
        "quantities": [line.quantity for line in allocation.lines],
    }


class AllocationStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.barrier = Barrier(db, pb.ExecuteResponse, pb.CompensateResponse)

    async def allocate(
        self,
        ctx: common_pb2.StepContext,
        order_id: str,
        decide: Callable[[], common_pb2.Allocation],
        now: datetime,
        plan_id: str = "",
    ) -> pb.ExecuteResponse:
        """Record the allocation ``decide()`` returns, once per saga step.

        ``decide`` runs inside the barrier and raises the step's business failures there, so a
        duplicate of a call that went through still gets the first answer, not a failure.
        """

        async def effect(reader: Reader) -> Effect[pb.ExecuteResponse]:
            allocation = decide()
            response = pb.ExecuteResponse(allocate_inventory=pb.AllocateInventoryOutput(allocation=allocation))
            params = _insert_params(allocation, order_id, now)
            if not plan_id:
                return Effect(response, _INSERT_CTES, params)
            return Effect(response, _INSERT_CTES + _USE_PLAN_CTE, {**params, "plan_id": plan_id}, _PLAN_UNUSED_GUARD)

        try:
            return await self.barrier.run(ctx, EXECUTE, effect)
        except Refused:
            raise FailedPrecondition(
                f"allocation {plan_id!r} was used by another reservation",
                reason="ALLOCATION_NOT_ACTIVE",
                metadata={"allocation_id": plan_id},
            ) from None

    async def release(self, ctx: common_pb2.StepContext) -> pb.CompensateResponse:
        """Compensate: the saga's active allocation is cancelled."""

        async def effect(reader: Reader) -> Effect[pb.CompensateResponse]:
            return Effect(pb.CompensateResponse(), _CANCEL_CTE, {"saga_id": ctx.saga_id, "now": utcnow()})

        return await self.barrier.run(ctx, COMPENSATE, effect)

    async def get(self, allocation_id: str) -> common_pb2.Allocation:
        return _to_proto(found(await self.db.fetchone(_BY_ID, (allocation_id,)), "allocation", allocation_id))

    async def list(self, *, saga_id: str, status: str, offset: int, limit: int) -> list[common_pb2.Allocation]:
        """A page of allocations, oldest first; empty filters match everything."""
        query = f"{_ALLOCATIONS} WHERE {matching(saga_id=saga_id, status=status)}{_PAGE}"
        rows = await self.db.fetch(query, {"saga_id": saga_id, "status": status, "offset": offset, "limit": limit})
        return [_to_proto(row) for row in rows]

    async def _change_active(self, column: str, value: Any, allocation_id: str) -> tuple[Any, bool]:
        """Set ``column`` of an active allocation, then read it: (its row, whether this call changed it)."""
        async with self.db.transaction() as conn:
            # Conditional update first, so a concurrent sweep or cancel cannot interleave.
            changed = (await conn.execute(_CHANGE_ACTIVE.format(column), (value, utcnow(), allocation_id))).rowcount > 0
            row = await (await conn.execute(_BY_ID, (allocation_id,))).fetchone()
        return found(row, "allocation", allocation_id), changed

    async def cancel(self, allocation_id: str) -> tuple[common_pb2.Allocation, bool]:
        """Cancel an active allocation; returns it and whether this call changed it."""
        row, changed = await self._change_active("status", "cancelled", allocation_id)
        if not changed and row.status == "expired":
            # An expired plan has already been reported as expired (notification sent);
            # rewriting it as cancelled would contradict that record.
            raise FailedPrecondition(
                f"allocation {allocation_id} has already expired",
                reason="ALLOCATION_EXPIRED",
                metadata={"allocation_id": allocation_id},
            )
        return _to_proto(row), changed

    async def settle(self, allocation_id: str, status: str) -> tuple[common_pb2.Allocation, bool]:
        """End an active allocation as ``status``; returns it and whether this call changed it.

        Settling it again to the status it has is no change; one already ended otherwise is
        refused (``ALLOCATION_SETTLED``).
        """
        row, changed = await self._change_active("status", status, allocation_id)
        if row.status != status:
            raise FailedPrecondition(
                f"allocation {allocation_id} has already ended as {row.status.upper()}",
                reason="ALLOCATION_SETTLED",
                metadata={"allocation_id": allocation_id, "status": row.status.upper()},
            )
        return _to_proto(row), changed

    async def extend(self, allocation_id: str, until: datetime) -> common_pb2.Allocation:
        row, changed = await self._change_active("expires_at", until, allocation_id)
        if not changed:
            raise FailedPrecondition(
                f"allocation {allocation_id} is {row.status.upper()}, not ACTIVE",
                reason="ALLOCATION_SETTLED",
                metadata={"allocation_id": allocation_id, "status": row.status.upper()},
            )
        return _to_proto(row)
