"""gRPC adapters of the allocation service: thin wrappers over the strategies, logic.py and the tables."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime

import grpc
from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invsaga.allocation.v1 import allocation_pb2 as pb
from invsaga.allocation.v1 import allocation_pb2_grpc as pb_grpc
from invsaga.common.v1 import common_pb2
from invsaga.notify.v1 import notify_pb2, notify_pb2_grpc
from invsaga.runtime import metrics
from invsaga.runtime.barrier import compensate_once, execute_once, execute_once_pg_statement, is_postgres
from invsaga.runtime.channels import channel_to
from invsaga.runtime.config import Settings
from invsaga.runtime.convert import aware, next_page_token, page_window, to_timestamp, utcnow
from invsaga.runtime.db import load_with_children, open_service_database
from invsaga.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from invsaga.runtime.server import App, registration
from services.allocation import geo, logic, models
from services.allocation.strategies import AllocationError, Plan, allocate

log = logging.getLogger("invsaga.allocation")

A = models.allocations
L = models.allocation_lines

NOTIFY_TIMEOUT = 5.0
SWEEP_BATCH = 200

# Execute's and Compensate's statements are built once: per call only values are bound.
# On PostgreSQL Execute's effect is plain SQL over psycopg: the allocation and its lines are
# data-modifying CTEs of one statement with the barrier row (execute_once_pg_statement; the
# lines' foreign key is checked at the end of the statement, when the allocation is there),
# constant text that psycopg prepares once for any number of lines. A duplicate Execute
# already fails here, on the unique saga_id, like the barrier row's conflict would:
# execute_once_pg_statement then answers with the stored result either way. SQLite has no
# INSERT in WITH and takes the two plain INSERTs through SQLAlchemy.
_INSERT_CTES_PG = (
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
_INSERT_ALLOCATION = A.insert().values(status="active", created_at=bindparam("now"), updated_at=bindparam("now"))
_INSERT_LINES = L.insert()
# Compensate: an allocation that already expired stays expired (both mean "no longer in force").
_CANCEL = (
    update(A)
    .where(A.c.saga_id == bindparam("saga"), A.c.status == "active")
    .values(status="cancelled", updated_at=bindparam("now"))
)


def _to_proto(row, lines: list[common_pb2.AllocationLine]) -> common_pb2.Allocation:
    return common_pb2.Allocation(
        allocation_id=row.allocation_id,
        saga_id=row.saga_id,
        strategy=logic.STRATEGY_VALUES[row.strategy],
        lines=lines,
        expires_at=to_timestamp(row.expires_at),
        optimal=row.optimal,
        total_cost=row.total_cost,
        status=logic.STATUS_FROM_DB[row.status],
    )


async def _load(conn: AsyncConnection, where=None, *, offset: int = 0, limit: int | None = None):
    found = await load_with_children(
        conn,
        select(A).order_by(A.c.created_at, A.c.allocation_id),
        A.c.allocation_id,
        select(L).order_by(L.c.allocation_id, L.c.warehouse_id, L.c.sku),
        L.c.allocation_id,
        where=where,
        offset=offset,
        limit=limit,
    )
    return [
        _to_proto(row, [common_pb2.AllocationLine(warehouse_id=l.warehouse_id, sku=l.sku, quantity=l.quantity) for l in lines])
        for row, lines in found
    ]


async def _get(conn: AsyncConnection, allocation_id: str) -> common_pb2.Allocation:
    found = await _load(conn, A.c.allocation_id == allocation_id)
    if not found:
        raise NotFound(f"allocation {allocation_id!r} not found", reason="ALLOCATION_NOT_FOUND")
    return found[0]


def _allocation_failure(err: AllocationError, strategy: str) -> FailedPrecondition:
    return FailedPrecondition(
        str(err),
        reason=err.reason,
        metadata={"strategy": strategy, **logic.shortage_metadata(err.shortages)},
    )


class AllocationStepServicer(pb_grpc.AllocationStepServiceServicer):
    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    async def _customer(self, data: pb.AllocateInventoryInput) -> tuple[float, float] | None:
        coordinates = logic.customer_coordinates(data)
        if coordinates is not None:
            return coordinates
        address = logic.customer_address(data)
        if address is None:
            return None
        try:
            # The first lookup loads the gazetteers (~1.5 s of CPU), so it is not done at start:
            # every process start (and test mesh) would pay it while only NEAREST and
            # COST_OPTIMIZE orders with an address need it. A thread keeps the loop serving.
            return await asyncio.to_thread(geo.resolve, address)
        except geo.UnknownAddress as err:
            raise InvalidArgument(
                f"unknown address {address!r}: {err.detail}",
                violations=[("allocate_inventory.customer_location.address", f"cannot resolve {address!r}")],
            ) from None

    async def _plan(self, problem: logic.Problem, customer: tuple[float, float] | None) -> Plan | AllocationError:
        """The strategy's plan, or its business failure (raised later, inside the barrier)."""
        if problem.strategy in ("NEAREST", "COST_OPTIMIZE") and customer is None:
            raise InvalidArgument(
                f"{problem.strategy} needs the customer's location",
                violations=[("allocate_inventory.customer_location", f"lat/lon or an address, required by {problem.strategy}")],
            )
        args = (problem.strategy, problem.demands, problem.candidates, problem.stock, problem.preferred, customer)
        try:
            if problem.strategy == "COST_OPTIMIZE":
                # The MILP may run up to its time cap; the event loop keeps serving meanwhile.
                return await asyncio.to_thread(allocate, *args)
            return allocate(*args)
        except AllocationError as err:
            return err
        except ValueError as err:
            raise InvalidArgument(str(err), violations=[("allocate_inventory", str(err))]) from None

    async def Execute(self, request: pb.ExecuteRequest, context) -> pb.ExecuteResponse:
        if request.WhichOneof("input") != "allocate_inventory":
            raise InvalidArgument("Execute needs allocate_inventory", violations=[("input", "allocate_inventory required")])
        data = request.allocate_inventory
        logic.validate_input(data)
        problem = logic.build_problem(data)
        # Planning is pure and may take a while (COST_OPTIMIZE): do it before the barrier's
        # transaction so SQLite's single connection is not held meanwhile. Its outcome is only
        # acted on inside the barrier, so duplicates and late Executes still get the barrier's
        # answer rather than a fresh plan.
        customer = await self._customer(data)
        planning = time.perf_counter()
        outcome = await self._plan(problem, customer)
        metrics.ALLOCATION_DURATION.labels(
            problem.strategy, "failed" if isinstance(outcome, AllocationError) else "allocated"
        ).observe(time.perf_counter() - planning)
        now = utcnow()
        expires_at = logic.expires_at(data, now, self.settings.saga.expiry.allocation)
        ctx = request.context

        def allocation() -> tuple[dict, pb.ExecuteResponse]:
            """The allocation's row and the response, shared by both backends' effects; the
            business failures raise here, inside the barrier, so a duplicate of a call that
            went through still gets the first answer."""
            if isinstance(outcome, AllocationError):
                raise _allocation_failure(outcome, problem.strategy)
            if expires_at <= now:
                raise FailedPrecondition(
                    "the request expired before its stock could be allocated",
                    reason="REQUEST_EXPIRED",
                    metadata={"expires_at": expires_at.isoformat()},
                )
            allocation_id = f"AL-{uuid.uuid4().hex}"
            row = {
                "allocation_id": allocation_id,
                "saga_id": ctx.saga_id,
                "order_id": data.order_id,
                "strategy": outcome.strategy,
                "total_cost": outcome.total_cost,
                "optimal": outcome.optimal,
                "expires_at": expires_at,
                "now": now,
            }
            allocation = common_pb2.Allocation(
                allocation_id=allocation_id,
                saga_id=ctx.saga_id,
                strategy=logic.STRATEGY_VALUES[outcome.strategy],
                lines=[
                    common_pb2.AllocationLine(warehouse_id=l.warehouse_id, sku=l.sku, quantity=l.quantity)
                    for l in sorted(outcome.lines, key=lambda l: (l.warehouse_id, l.sku))
                ],
                expires_at=to_timestamp(expires_at),
                optimal=outcome.optimal,
                total_cost=outcome.total_cost,
                status=common_pb2.ALLOCATION_STATUS_ACTIVE,
            )
            return row, pb.ExecuteResponse(allocate_inventory=pb.AllocateInventoryOutput(allocation=allocation))

        if is_postgres(self.engine):

            async def effect_pg(conn) -> tuple[pb.ExecuteResponse, str, dict]:
                row, response = allocation()
                row["warehouse_ids"] = [l.warehouse_id for l in outcome.lines]
                row["skus"] = [l.sku for l in outcome.lines]
                row["quantities"] = [l.quantity for l in outcome.lines]
                return response, _INSERT_CTES_PG, row

            return await execute_once_pg_statement(self.engine, ctx, pb.ExecuteResponse, effect_pg)

        async def effect(conn: AsyncConnection) -> pb.ExecuteResponse:
            row, response = allocation()
            await conn.execute(_INSERT_ALLOCATION, row)
            if outcome.lines:
                await conn.execute(
                    _INSERT_LINES,
                    [
                        {"allocation_id": row["allocation_id"], "warehouse_id": l.warehouse_id, "sku": l.sku, "quantity": l.quantity}
                        for l in outcome.lines
                    ],
                )
            return response

        return await execute_once(self.engine, models.barrier, ctx, pb.ExecuteResponse, effect)

    async def Compensate(self, request: pb.CompensateRequest, context) -> pb.CompensateResponse:
        saga_id = request.context.saga_id

        async def effect(conn: AsyncConnection) -> pb.CompensateResponse:
            await conn.execute(_CANCEL, {"saga": saga_id, "now": utcnow()})
            return pb.CompensateResponse()

        return await compensate_once(
            self.engine,
            models.barrier,
            request.context,
            pb.CompensateResponse,
            effect,
            pb.CompensateResponse(null_compensation=True),
        )


class AllocationServicer(pb_grpc.AllocationServiceServicer):
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def GetAllocation(self, request: pb.GetAllocationRequest, context) -> pb.GetAllocationResponse:
        if not request.allocation_id:
            raise InvalidArgument("allocation_id is required", violations=[("allocation_id", "required")])
        async with self.engine.connect() as conn:
            return pb.GetAllocationResponse(allocation=await _get(conn, request.allocation_id))

    async def ListAllocations(self, request: pb.ListAllocationsRequest, context) -> pb.ListAllocationsResponse:
        offset, limit = page_window(request.page_size, request.page_token)
        where = []
        if request.saga_id:
            where.append(A.c.saga_id == request.saga_id)
        if request.status:
            if request.status not in logic.STATUS_TO_DB:
                raise InvalidArgument("unknown status", violations=[("status", "unknown allocation status")])
            where.append(A.c.status == logic.STATUS_TO_DB[request.status])
        async with self.engine.connect() as conn:
            found = await _load(conn, and_(*where) if where else None, offset=offset, limit=limit)
        return pb.ListAllocationsResponse(allocations=found, next_page_token=next_page_token(offset, limit, len(found)))

    async def CancelAllocation(self, request: pb.CancelAllocationRequest, context) -> pb.CancelAllocationResponse:
        if not request.allocation_id:
            raise InvalidArgument("allocation_id is required", violations=[("allocation_id", "required")])
        if len(request.reason) > logic.MAX_TEXT:
            raise InvalidArgument("reason too long", violations=[("reason", f"at most {logic.MAX_TEXT} characters")])
        async with self.engine.begin() as conn:
            # Conditional update first, so a concurrent sweep or cancel cannot interleave.
            changed = await conn.execute(
                update(A)
                .where(A.c.allocation_id == request.allocation_id, A.c.status == "active")
                .values(status="cancelled", updated_at=utcnow())
            )
            allocation = await _get(conn, request.allocation_id)
            if changed.rowcount == 0 and allocation.status == common_pb2.ALLOCATION_STATUS_EXPIRED:
                # An expired plan has already been reported as expired (notification sent);
                # rewriting it as cancelled would contradict that record.
                raise FailedPrecondition(
                    f"allocation {request.allocation_id} has already expired",
                    reason="ALLOCATION_EXPIRED",
                    metadata={"allocation_id": request.allocation_id},
                )
        if changed.rowcount:
            log.info("allocation %s cancelled by operator: %s", request.allocation_id, request.reason or "no reason given")
        return pb.CancelAllocationResponse(allocation=allocation)


class ExpirySweeper:
    """Marks active allocations past ``expires_at`` as expired and notifies each expiry.

    The state change commits first; the notification follows and is retried on later sweeps
    until the notify service accepts it (``expiry_notified``), so a notify outage delays the
    notice but never loses it or the expiry. Delivery is at least once: a crash between the
    send and the flag, or two replicas sweeping at the same moment, can repeat a notice.
    """

    def __init__(self, engine: AsyncEngine, settings: Settings, notify: notify_pb2_grpc.NotifyServiceStub) -> None:
        self.engine = engine
        self.interval = settings.saga.expiry.cleanup_interval
        self.notify = notify

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:  # a database hiccup must not end the loop
                log.exception("allocation expiry sweep failed")

    async def sweep(self, now: datetime | None = None) -> int:
        """One pass; returns how many allocations it expired."""
        now = now or utcnow()
        async with self.engine.begin() as conn:
            expired = await conn.execute(
                update(A).where(A.c.status == "active", A.c.expires_at < now).values(status="expired", updated_at=now)
            )
        if expired.rowcount:
            metrics.EXPIRED_ALLOCATIONS.inc(expired.rowcount)
            log.info("expired %d allocation(s)", expired.rowcount)
        async with self.engine.connect() as conn:
            pending = (
                await conn.execute(
                    select(A.c.allocation_id, A.c.saga_id, A.c.order_id, A.c.strategy, A.c.expires_at)
                    .where(A.c.status == "expired", A.c.expiry_notified.is_(False))
                    .order_by(A.c.expires_at, A.c.allocation_id)
                    .limit(SWEEP_BATCH)
                )
            ).all()
        for row in pending:
            request = notify_pb2.SendNotificationRequest(
                kind=common_pb2.NOTIFICATION_KIND_ALLOCATION_EXPIRED,
                saga_id=row.saga_id,
                order_id=row.order_id,
                message=f"allocation {row.allocation_id} expired before the reservation was completed",
                attributes={
                    "allocation_id": row.allocation_id,
                    "strategy": row.strategy,
                    "expires_at": aware(row.expires_at).isoformat(),
                },
            )
            try:
                await self.notify.SendNotification(request, timeout=NOTIFY_TIMEOUT)
            except grpc.RpcError as err:
                # Stop this round: the rest would most likely fail the same way; retried next sweep.
                log.warning("expiry notification for allocation %s failed: %s", row.allocation_id, err)
                break
            async with self.engine.begin() as conn:
                await conn.execute(update(A).where(A.c.allocation_id == row.allocation_id).values(expiry_notified=True))
        return expired.rowcount


async def load_solver() -> None:
    """Import HiGHS and numpy in the background after startup (about 0.1-0.3 s here), so the
    first COST_OPTIMIZE saga does not pay for it."""
    try:
        await asyncio.to_thread(__import__, "highspy")
    except ImportError:  # pragma: no cover - a dependency; the strategy reports it when used
        log.warning("highspy is not installed: COST_OPTIMIZE will fail")


async def build(settings: Settings) -> App:
    engine = await open_service_database(settings, models.metadata, models.__file__)
    notify_channel = channel_to(settings, "notify")
    sweeper = ExpirySweeper(engine, settings, notify_pb2_grpc.NotifyServiceStub(notify_channel))
    return App(
        services=[
            registration(AllocationServicer(engine), pb_grpc, "AllocationService"),
            registration(AllocationStepServicer(engine, settings), pb_grpc, "AllocationStepService"),
        ],
        background=[sweeper.run, load_solver],
        on_stop=[notify_channel.close, engine.dispose],
    )
