"""All of the logistics service's SQL: the step's picklists, the operators' reads and status
changes, as plain SQL text on the service's ``Database``."""

from __future__ import annotations

import builtins
import uuid
from datetime import datetime
from typing import Any, Awaitable, Callable

from invsaga.common.v1 import common_pb2
from invsaga.logistics.v1 import logistics_pb2 as pb
from invsaga.runtime.barrier import COMPENSATE, EXECUTE, Barrier, Effect, Reader
from invsaga.runtime.convert import to_timestamp, utcnow
from invsaga.runtime.db import Database
from invsaga.runtime.errors import FailedPrecondition
from services.common import fields, found, matching
from services.logistics import logic

# Execute: the picklists and their lines are data-modifying CTEs of the barrier's one
# statement (the lines' foreign key is checked at the end of the statement, when the
# picklists are there), a constant text psycopg prepares once, for any number of picklists
# and lines.
_INSERT_CTES = (
    "picklist AS ("
    " INSERT INTO picklists (picklist_id, saga_id, order_id, warehouse_id, priority, is_urgent, status,"
    " created_at, updated_at, kind)"
    " SELECT p.picklist_id, %(saga_id)s, %(order_id)s, p.warehouse_id, %(priority)s, %(is_urgent)s,"
    " 'pending', %(now)s, %(now)s, %(kind)s"
    " FROM unnest(%(picklist_ids)s::text[], %(warehouse_ids)s::text[]) AS p(picklist_id, warehouse_id)),"
    " lines AS (INSERT INTO picklist_lines (picklist_id, sequence, sku, quantity, bin)"
    " SELECT * FROM unnest(%(line_picklist_ids)s::text[], %(sequences)s::int[], %(skus)s::text[],"
    " %(quantities)s::bigint[], %(bins)s::text[]))"
)
# Compensate: only picklists nobody has started are cancelled. One already PROCESSING is goods
# in a picker's hands, COMPLETED ones have shipped: undoing those is an operator's call
# (UpdatePicklistStatus), not something a rollback may decide. No ReleaseLocks here: the stock
# belongs to the saga's LockInventory step, whose own compensation (run next, in reverse step
# order) unlocks it; calling inventory from inside this transaction would also tie the barrier
# row to a remote effect that cannot roll back with it.
# Like every status change, each cancellation is recorded for the coordinator's feed in the
# same statement (the coordinator acknowledges those of sagas that never completed).
_CANCEL_PENDING_CTE = (
    "cancel AS (UPDATE picklists SET status = 'cancelled', updated_at = %(now)s"
    " WHERE saga_id = %(saga_id)s AND status = 'pending' RETURNING picklist_id, saga_id, warehouse_id),"
    " cancel_changes AS (INSERT INTO picklist_changes (picklist_id, saga_id, warehouse_id, status, changed_at)"
    " SELECT picklist_id, saga_id, warehouse_id, 'cancelled', %(now)s FROM cancel)"
)

# A page of picklists is one query: each row carries its lines as JSON.
_PICKLISTS = (
    "SELECT picklist_id, saga_id, order_id, warehouse_id, priority, is_urgent, status, created_at, updated_at, kind,"
    " (SELECT coalesce(json_agg(json_build_object('sequence', l.sequence, 'sku', l.sku, 'quantity', l.quantity,"
    " 'bin', l.bin) ORDER BY l.sequence), '[]') FROM picklist_lines l WHERE l.picklist_id = p.picklist_id) AS lines"
    " FROM picklists p"
)
_BY_ID = _PICKLISTS + " WHERE picklist_id = %s"
# The pickers' queue: urgent first, then by priority, oldest first.
_PAGE = " ORDER BY is_urgent DESC, priority DESC, created_at, picklist_id OFFSET %(offset)s LIMIT %(limit)s"
_SET_STATUS = "UPDATE picklists SET status = %s, updated_at = %s WHERE picklist_id = %s"
# Each status change is recorded for the coordinator in the same transaction (the feed).
_RECORD_CHANGE = (
    "INSERT INTO picklist_changes (picklist_id, saga_id, warehouse_id, status, changed_at) VALUES (%s, %s, %s, %s, %s)"
)
_CHANGES = (
    "SELECT change_id, picklist_id, saga_id, warehouse_id, status, changed_at FROM picklist_changes"
    " ORDER BY change_id LIMIT %s"
)
_ACK = "DELETE FROM picklist_changes WHERE change_id = ANY(%s)"
_SAGA_PICKLISTS_LOCKED = _PICKLISTS + " WHERE saga_id = %s ORDER BY picklist_id FOR UPDATE"
# How many picklist ids a PICKING_STARTED refusal names.
NAMED_PICKLISTS = 20


def _to_proto(row: Any) -> common_pb2.Picklist:
    return common_pb2.Picklist(
        **fields(row, "picklist_id saga_id order_id warehouse_id priority is_urgent"),
        status=logic.STATUS_FROM_DB[row.status],
        lines=[common_pb2.PicklistLine(**line) for line in row.lines],
        created_at=to_timestamp(row.created_at),
        updated_at=to_timestamp(row.updated_at),
        kind=logic.KIND_FROM_DB[row.kind],
    )


async def _set_status(conn: Any, picklist: common_pb2.Picklist, status: str, now: datetime) -> None:
    """A picklist's new status, recorded for the coordinator in the same transaction (the feed)."""
    await conn.execute(_SET_STATUS, (status, now, picklist.picklist_id))
    await conn.execute(_RECORD_CHANGE, (picklist.picklist_id, picklist.saga_id, picklist.warehouse_id, status, now))
    picklist.status = logic.STATUS_FROM_DB[status]
    picklist.updated_at.CopyFrom(to_timestamp(now))


def _generated(saga_id: str, data: pb.GeneratePicklistInput, plans: list[logic.PickPlan]) -> Effect[pb.ExecuteResponse]:
    """The step's picklists (one per plan, new ids) as the response and as the CTEs' arrays."""
    now = utcnow()
    ids = [f"PL-{uuid.uuid4().hex}" for _ in plans]
    stamp = to_timestamp(now)
    picklists = [
        common_pb2.Picklist(
            picklist_id=picklist_id,
            **fields(data, "order_id priority is_urgent"),
            saga_id=saga_id,
            warehouse_id=plan.warehouse_id,
            status=common_pb2.PICKLIST_STATUS_PENDING,
            lines=[
                common_pb2.PicklistLine(sku=line.sku, quantity=line.quantity, bin=line.bin, sequence=line.sequence)
                for line in plan.lines
            ],
            created_at=stamp,
            updated_at=stamp,
            kind=data.kind or common_pb2.PICKLIST_KIND_ORDER,
        )
        for picklist_id, plan in zip(ids, plans)
    ]
    # The lines as columns (validation guarantees at least one line).
    line_columns = ("line_picklist_ids", "sequences", "skus", "quantities", "bins")
    line_rows = [
        (i, line.sequence, line.sku, line.quantity, line.bin) for i, plan in zip(ids, plans) for line in plan.lines
    ]
    params = {
        "saga_id": saga_id,
        **fields(data, "order_id priority is_urgent"),
        "kind": logic.KIND_TO_DB[data.kind or common_pb2.PICKLIST_KIND_ORDER],
        "now": now,
        "picklist_ids": ids,
        "warehouse_ids": [plan.warehouse_id for plan in plans],
        **{column: list(values) for column, values in zip(line_columns, zip(*line_rows))},
    }
    response = pb.ExecuteResponse(generate_picklist=pb.GeneratePicklistOutput(picklists=picklists))
    return Effect(response, _INSERT_CTES, params)


class LogisticsStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.barrier = Barrier(db, pb.ExecuteResponse, pb.CompensateResponse)

    async def generate(
        self, ctx: common_pb2.StepContext, data: pb.GeneratePicklistInput, plans: list[logic.PickPlan]
    ) -> pb.ExecuteResponse:
        """Record the saga step's picklists, once."""

        async def effect(reader: Reader) -> Effect[pb.ExecuteResponse]:
            return _generated(ctx.saga_id, data, plans)

        return await self.barrier.run(ctx, EXECUTE, effect)

    async def cancel_pending(self, ctx: common_pb2.StepContext) -> pb.CompensateResponse:
        """Compensate: the saga's pending picklists are cancelled."""

        async def effect(reader: Reader) -> Effect[pb.CompensateResponse]:
            return Effect(pb.CompensateResponse(), _CANCEL_PENDING_CTE, {"saga_id": ctx.saga_id, "now": utcnow()})

        return await self.barrier.run(ctx, COMPENSATE, effect)

    async def get(self, picklist_id: str) -> common_pb2.Picklist:
        return _to_proto(found(await self.db.fetchone(_BY_ID, (picklist_id,)), "picklist", picklist_id))

    async def list(
        self, *, saga_id: str, warehouse_id: str, status: str, offset: int, limit: int
    ) -> list[common_pb2.Picklist]:
        """A page of the pickers' queue; empty filters match everything."""
        filters = {"saga_id": saga_id, "warehouse_id": warehouse_id, "status": status}
        rows = await self.db.fetch(
            f"{_PICKLISTS} WHERE {matching(**filters)}{_PAGE}", {**filters, "offset": offset, "limit": limit}
        )
        return [_to_proto(row) for row in rows]

    async def change_status(
        self, picklist_id: str, target: str, before_commit: Callable[[common_pb2.Picklist], Awaitable[None]]
    ) -> tuple[common_pb2.Picklist, str]:
        """Move a picklist to ``target``; returns it as it now is and the status it had.

        The picklist's row stays locked from the check until the new status commits, so two
        operators cannot, say, complete and cancel the same list with inventory seeing both.
        ``before_commit(picklist)`` runs in between, only when the status changes. A request
        for the status the picklist already has changes nothing (a retried request).
        """
        async with self.db.transaction() as conn:
            row = await (await conn.execute(_BY_ID + " FOR UPDATE", (picklist_id,))).fetchone()
            row = found(row, "picklist", picklist_id)
            picklist, current = _to_proto(row), row.status
            if current == target:
                return picklist, current
            if not logic.transition_allowed(current, target):
                raise FailedPrecondition(
                    f"picklist {picklist_id} cannot go from {current.upper()} to {target.upper()}",
                    reason="INVALID_STATUS_TRANSITION",
                    metadata={"picklist_id": picklist_id, "from": current.upper(), "to": target.upper()},
                )
            await before_commit(picklist)
            await _set_status(conn, picklist, target, utcnow())
        return picklist, current

    async def cancel_for_saga(
        self, saga_id: str, all_or_nothing: bool, before_cancel: Callable[[common_pb2.Picklist], Awaitable[None]]
    ) -> tuple[builtins.list[common_pb2.Picklist], builtins.list[common_pb2.Picklist]]:
        """Cancel the saga's PENDING picklists in one transaction: (cancelled, the others).

        Every picklist of the saga stays row-locked from the check to the commit, so a picker
        cannot start one half-way. ``before_cancel(picklist)`` runs for each one cancelled
        (its locks are released there). With ``all_or_nothing``, a picklist PROCESSING or
        COMPLETED refuses the whole call (``PICKING_STARTED``), changing nothing.
        """
        async with self.db.transaction() as conn:
            rows = await (await conn.execute(_SAGA_PICKLISTS_LOCKED, (saga_id,))).fetchall()
            picklists = [(_to_proto(row), row.status) for row in rows]
            started = [p.picklist_id for p, status in picklists if status in (logic.PROCESSING, logic.COMPLETED)]
            if all_or_nothing and started:
                raise FailedPrecondition(
                    f"picking has started on {len(started)} picklist(s) of saga {saga_id}",
                    reason="PICKING_STARTED",
                    metadata={"saga_id": saga_id, "picklists": ",".join(started[:NAMED_PICKLISTS])},
                )
            cancelled, untouched = [], []
            now = utcnow()
            for picklist, status in picklists:
                if status != logic.PENDING:
                    untouched.append(picklist)
                    continue
                await before_cancel(picklist)
                await _set_status(conn, picklist, logic.CANCELLED, now)
                cancelled.append(picklist)
        return cancelled, untouched

    async def changes(self, limit: int) -> builtins.list[pb.PicklistChange]:
        """The oldest unacknowledged picklist changes."""
        rows = await self.db.fetch(_CHANGES, (limit,))
        return [
            pb.PicklistChange(
                **fields(row, "change_id picklist_id saga_id warehouse_id"),
                status=logic.STATUS_FROM_DB[row.status],
                changed_at=to_timestamp(row.changed_at),
            )
            for row in rows
        ]

    async def acknowledge(self, change_ids: builtins.list[int]) -> int:
        async with self.db.connection() as conn:
            cursor = await conn.execute(_ACK, (change_ids,))
            return cursor.rowcount
