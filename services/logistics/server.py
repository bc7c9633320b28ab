"""gRPC adapters of the logistics service: thin wrappers over logic.py, the tables and inventory."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

import grpc
from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.logistics.v1 import logistics_pb2 as pb
from invsaga.logistics.v1 import logistics_pb2_grpc as pb_grpc
from invsaga.runtime.barrier import (
    compensate_once,
    execute_once,
    execute_once_pg_statement,
    is_postgres,
)
from invsaga.runtime.channels import channel_to
from invsaga.runtime.config import Settings
from invsaga.runtime.convert import next_page_token, page_window, to_timestamp, utcnow
from invsaga.runtime.db import load_with_children, open_service_database
from invsaga.runtime.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RpcFailure,
    Unavailable,
)
from invsaga.runtime.server import App, registration
from services.logistics import logic, models

log = logging.getLogger("invsaga.logistics")

P = models.picklists
PL = models.picklist_lines

INVENTORY_TIMEOUT = 10.0

# The step's statements, built once: building a statement costs more than sending it.
# RETURNING makes SQLAlchemy send many rows as one multi-row INSERT instead of one INSERT
# per row; what it returns is not needed.
_INSERT_PICKLISTS = P.insert().returning(P.c.picklist_id)
_INSERT_LINES = PL.insert().returning(PL.c.sequence)
_CANCEL_PENDING = (
    update(P)
    .where(P.c.saga_id == bindparam("saga"), P.c.status == logic.PENDING)
    .values(status=logic.CANCELLED, updated_at=bindparam("now", type_=P.c.updated_at.type))
)
# On PostgreSQL the picklists and their lines are data-modifying CTEs of one statement with
# the barrier row (execute_once_pg_statement; the lines' foreign key is checked at the end of
# the statement, when the picklists are there), a constant text psycopg prepares once, for
# any number of picklists and lines.
_INSERT_CTES_PG = (
    "picklist AS ("
    " INSERT INTO picklists (picklist_id, saga_id, order_id, warehouse_id, priority, is_urgent, status,"
    " created_at, updated_at)"
    " SELECT p.picklist_id, %(saga_id)s, %(order_id)s, p.warehouse_id, %(priority)s, %(is_urgent)s,"
    " 'pending', %(now)s, %(now)s"
    " FROM unnest(%(picklist_ids)s::text[], %(warehouse_ids)s::text[]) AS p(picklist_id, warehouse_id)),"
    " lines AS (INSERT INTO picklist_lines (picklist_id, sequence, sku, quantity, bin)"
    " SELECT * FROM unnest(%(line_picklist_ids)s::text[], %(sequences)s::int[], %(skus)s::text[],"
    " %(quantities)s::bigint[], %(bins)s::text[]))"
)


def _to_proto(row, lines: list[common_pb2.PicklistLine]) -> common_pb2.Picklist:
    return common_pb2.Picklist(
        picklist_id=row.picklist_id,
        saga_id=row.saga_id,
        order_id=row.order_id,
        warehouse_id=row.warehouse_id,
        priority=row.priority,
        is_urgent=row.is_urgent,
        status=logic.STATUS_FROM_DB[row.status],
        lines=lines,
        created_at=to_timestamp(row.created_at),
        updated_at=to_timestamp(row.updated_at),
    )


async def _load(conn: AsyncConnection, where=None, *, offset: int = 0, limit: int | None = None):
    found = await load_with_children(
        conn,
        select(P).order_by(P.c.is_urgent.desc(), P.c.priority.desc(), P.c.created_at, P.c.picklist_id),
        P.c.picklist_id,
        select(PL).order_by(PL.c.picklist_id, PL.c.sequence),
        PL.c.picklist_id,
        where=where,
        offset=offset,
        limit=limit,
    )
    return [
        _to_proto(row, [common_pb2.PicklistLine(sku=l.sku, quantity=l.quantity, bin=l.bin, sequence=l.sequence) for l in lines])
        for row, lines in found
    ]


async def _get(conn: AsyncConnection, picklist_id: str) -> common_pb2.Picklist:
    found = await _load(conn, P.c.picklist_id == picklist_id)
    if not found:
        raise NotFound(f"picklist {picklist_id!r} not found", reason="PICKLIST_NOT_FOUND")
    return found[0]


async def _insert_core(
    conn: AsyncConnection,
    saga_id: str,
    data: pb.GeneratePicklistInput,
    plans: list[logic.PickPlan],
    ids: list[str],
    now: datetime,
) -> None:
    """The step's picklists (``plans``, named ``ids``) and their lines, in two INSERTs."""
    await conn.execute(
        _INSERT_PICKLISTS,
        [
            {
                "picklist_id": picklist_id,
                "saga_id": saga_id,
                "order_id": data.order_id,
                "warehouse_id": plan.warehouse_id,
                "priority": data.priority,
                "is_urgent": data.is_urgent,
                "status": logic.PENDING,
                "created_at": now,
                "updated_at": now,
            }
            for picklist_id, plan in zip(ids, plans)
        ],
    )
    await conn.execute(
        _INSERT_LINES,
        [
            {"picklist_id": picklist_id, "sequence": l.sequence, "sku": l.sku, "quantity": l.quantity, "bin": l.bin}
            for picklist_id, plan in zip(ids, plans)
            for l in plan.lines
        ],
    )


def _insert_params(
    saga_id: str,
    data: pb.GeneratePicklistInput,
    plans: list[logic.PickPlan],
    ids: list[str],
    now: datetime,
) -> dict:
    """The parameters of ``_INSERT_CTES_PG``: the rows of ``_insert_core`` as arrays."""
    return {
        "saga_id": saga_id,
        "order_id": data.order_id,
        "priority": data.priority,
        "is_urgent": data.is_urgent,
        "now": now,
        "picklist_ids": ids,
        "warehouse_ids": [plan.warehouse_id for plan in plans],
        "line_picklist_ids": [picklist_id for picklist_id, plan in zip(ids, plans) for _ in plan.lines],
        "sequences": [l.sequence for plan in plans for l in plan.lines],
        "skus": [l.sku for plan in plans for l in plan.lines],
        "quantities": [l.quantity for plan in plans for l in plan.lines],
        "bins": [l.bin for plan in plans for l in plan.lines],
    }


class LogisticsStepServicer(pb_grpc.LogisticsStepServiceServicer):
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.postgres = is_postgres(engine)

    async def Execute(self, request: pb.ExecuteRequest, context) -> pb.ExecuteResponse:
        if request.WhichOneof("input") != "generate_picklist":
            raise InvalidArgument("Execute needs generate_picklist", violations=[("input", "generate_picklist required")])
        data = request.generate_picklist
        logic.validate_input(data)
        plans = logic.plan_picklists(data.lines)
        saga_id = request.context.saga_id

        def created() -> tuple[pb.ExecuteResponse, list[str], datetime]:
            now = utcnow()
            ids = [f"PL-{uuid.uuid4().hex}" for _ in plans]
            stamp = to_timestamp(now)
            picklists = [
                common_pb2.Picklist(
                    picklist_id=picklist_id,
                    saga_id=saga_id,
                    order_id=data.order_id,
                    warehouse_id=plan.warehouse_id,
                    priority=data.priority,
                    is_urgent=data.is_urgent,
                    status=common_pb2.PICKLIST_STATUS_PENDING,
                    lines=[
                        common_pb2.PicklistLine(sku=l.sku, quantity=l.quantity, bin=l.bin, sequence=l.sequence)
                        for l in plan.lines
                    ],
                    created_at=stamp,
                    updated_at=stamp,
                )
                for picklist_id, plan in zip(ids, plans)
            ]
            return pb.ExecuteResponse(generate_picklist=pb.GeneratePicklistOutput(picklists=picklists)), ids, now

        if self.postgres:

            async def effect_pg(conn) -> tuple[pb.ExecuteResponse, str, dict]:
                response, ids, now = created()
                return response, _INSERT_CTES_PG, _insert_params(saga_id, data, plans, ids, now)

            return await execute_once_pg_statement(self.engine, request.context, pb.ExecuteResponse, effect_pg)

        async def effect(conn) -> pb.ExecuteResponse:
            response, ids, now = created()
            await _insert_core(conn, saga_id, data, plans, ids, now)
            return response

        return await execute_once(self.engine, models.barrier, request.context, pb.ExecuteResponse, effect)

    async def Compensate(self, request: pb.CompensateRequest, context) -> pb.CompensateResponse:
        saga_id = request.context.saga_id

        async def effect(conn: AsyncConnection) -> pb.CompensateResponse:
            # Only picklists nobody has started are cancelled. One already PROCESSING is goods
            # in a picker's hands, COMPLETED ones have shipped: undoing those is an operator's
            # call (UpdatePicklistStatus), not something a rollback may decide.
            # No ReleaseLocks here: the stock belongs to the saga's LockInventory step, whose own
            # compensation (run next, in reverse step order) unlocks it. Calling inventory from
            # inside this transaction would also tie the barrier row to a remote effect that
            # cannot roll back with it.
            await conn.execute(_CANCEL_PENDING, {"saga": saga_id, "now": utcnow()})
            return pb.CompensateResponse()

        return await compensate_once(
            self.engine,
            models.barrier,
            request.context,
            pb.CompensateResponse,
            effect,
            pb.CompensateResponse(null_compensation=True),
        )


def _inventory_failure(err: grpc.RpcError, action: str, picklist: common_pb2.Picklist) -> DomainError:
    """The inventory service's refusal as this service's error, keeping its reason and details."""
    failure = RpcFailure.from_error(err)
    metadata = {**failure.metadata, "picklist_id": picklist.picklist_id, "inventory_action": action}
    if failure.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(
            f"inventory service unavailable ({failure.message}); the picklist is unchanged, retry later",
            reason="INVENTORY_UNAVAILABLE",
            metadata=metadata,
        )
    # NOT_FOUND from inventory means the saga holds no locks there: for this picklist (which does
    # exist) that is a precondition failure, not a missing resource.
    code = grpc.StatusCode.FAILED_PRECONDITION if failure.code == grpc.StatusCode.NOT_FOUND else failure.code
    error = DomainError(
        f"inventory refused to {action} the picklist's locks: {failure.message}",
        reason=failure.reason or "INVENTORY_REFUSED",
        metadata=metadata,
        violations=failure.violations,
    )
    error.code = code
    return error


class LogisticsServicer(pb_grpc.LogisticsServiceServicer):
    def __init__(self, engine: AsyncEngine, inventory: inventory_pb2_grpc.InventoryServiceStub) -> None:
        self.engine = engine
        self.inventory = inventory

    async def GetPicklist(self, request: pb.GetPicklistRequest, context) -> pb.GetPicklistResponse:
        if not request.picklist_id:
            raise InvalidArgument("picklist_id is required", violations=[("picklist_id", "required")])
        async with self.engine.connect() as conn:
            return pb.GetPicklistResponse(picklist=await _get(conn, request.picklist_id))

    async def ListPicklists(self, request: pb.ListPicklistsRequest, context) -> pb.ListPicklistsResponse:
        offset, limit = page_window(request.page_size, request.page_token)
        where = []
        if request.saga_id:
            where.append(P.c.saga_id == request.saga_id)
        if request.warehouse_id:
            where.append(P.c.warehouse_id == request.warehouse_id)
        if request.status:
            if request.status not in logic.STATUS_TO_DB:
                raise InvalidArgument("unknown status", violations=[("status", "unknown picklist status")])
            where.append(P.c.status == logic.STATUS_TO_DB[request.status])
        async with self.engine.connect() as conn:
            found = await _load(conn, and_(*where) if where else None, offset=offset, limit=limit)
        return pb.ListPicklistsResponse(picklists=found, next_page_token=next_page_token(offset, limit, len(found)))

    async def _apply_to_locks(self, action: str, picklist: common_pb2.Picklist) -> None:
        try:
            if action == logic.HOLD:
                await self.inventory.HoldLocks(
                    inventory_pb2.HoldLocksRequest(saga_id=picklist.saga_id, warehouse_id=picklist.warehouse_id),
                    timeout=INVENTORY_TIMEOUT,
                )
            elif action == logic.COMMIT:
                await self.inventory.CommitLocks(
                    inventory_pb2.CommitLocksRequest(saga_id=picklist.saga_id, warehouse_id=picklist.warehouse_id),
                    timeout=INVENTORY_TIMEOUT,
                )
            else:
                await self.inventory.ReleaseLocks(
                    inventory_pb2.ReleaseLocksRequest(
                        saga_id=picklist.saga_id,
                        warehouse_id=picklist.warehouse_id,
                        reason=f"picklist {picklist.picklist_id} cancelled",
                    ),
                    timeout=INVENTORY_TIMEOUT,
                )
        except grpc.RpcError as err:
            raise _inventory_failure(err, action, picklist) from None

    async def UpdatePicklistStatus(
        self, request: pb.UpdatePicklistStatusRequest, context
    ) -> pb.UpdatePicklistStatusResponse:
        if not request.picklist_id:
            raise InvalidArgument("picklist_id is required", violations=[("picklist_id", "required")])
        if request.status not in logic.STATUS_TO_DB:
            raise InvalidArgument("unknown status", violations=[("status", "PROCESSING, COMPLETED or CANCELLED")])
        target = logic.STATUS_TO_DB[request.status]
        # The picklist row stays locked (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE
        # serialises all writers) from the check until the new status commits, so two operators
        # cannot, say, complete and cancel the same list with inventory seeing both.
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(select(P.c.status).where(P.c.picklist_id == request.picklist_id).with_for_update())
            ).first()
            if row is None:
                raise NotFound(f"picklist {request.picklist_id!r} not found", reason="PICKLIST_NOT_FOUND")
            picklist = await _get(conn, request.picklist_id)
            if row.status == target:
                return pb.UpdatePicklistStatusResponse(picklist=picklist)  # a retried request
            if not logic.transition_allowed(row.status, target):
                raise FailedPrecondition(
                    f"picklist {request.picklist_id} cannot go from {row.status.upper()} to {target.upper()}",
                    reason="INVALID_STATUS_TRANSITION",
                    metadata={"picklist_id": request.picklist_id, "from": row.status.upper(), "to": target.upper()},
                )
            # Inventory first, then our status: the hold/commit/release calls are idempotent, so
            # if we crash (or the commit fails) after inventory acted, the picklist still shows
            # the old status and the operator's retry repeats the call harmlessly and commits.
            # The reverse order could leave a COMPLETED picklist whose stock was never consumed.
            await self._apply_to_locks(logic.INVENTORY_ACTION[target], picklist)
            now = utcnow()
            await conn.execute(
                update(P).where(P.c.picklist_id == request.picklist_id).values(status=target, updated_at=now)
            )
        picklist.status = request.status
        picklist.updated_at.CopyFrom(to_timestamp(now))
        log.info("picklist %s: %s -> %s", picklist.picklist_id, row.status, target, extra={"saga_id": picklist.saga_id})
        return pb.UpdatePicklistStatusResponse(picklist=picklist)


async def build(settings: Settings) -> App:
    engine = await open_service_database(settings, models.metadata, models.__file__)
    inventory_channel = channel_to(settings, "inventory")
    return App(
        services=[
            registration(
                LogisticsServicer(engine, inventory_pb2_grpc.InventoryServiceStub(inventory_channel)),
                pb_grpc,
                "LogisticsService",
            ),
            registration(LogisticsStepServicer(engine), pb_grpc, "LogisticsStepService"),
        ],
        on_stop=[inventory_channel.close, engine.dispose],
    )
