"""gRPC adapters of the allocation service: thin wrappers over the strategies, logic.py and store.py."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid


from invsaga.allocation.v1 import allocation_pb2 as pb
from invsaga.allocation.v1 import allocation_pb2_grpc as pb_grpc
from invsaga.common.v1 import common_pb2
from invsaga.domain import geo
from invsaga.runtime import metrics
from invsaga.runtime.config import Settings
from invsaga.runtime.convert import next_page_token, page_window, to_timestamp, utcnow
from invsaga.runtime.db import open_service_database
from invsaga.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from invsaga.runtime.server import App, registration
from services.allocation import logic, models, plans
from services.allocation.store import AllocationStore
from services.allocation.strategies import AllocationError, Plan, allocate
from services.common import StoreServicer, fields, future_until, require, require_input, status_filter

log = logging.getLogger("invsaga.allocation")


def _allocation_failure(err: AllocationError, strategy: str) -> FailedPrecondition:
    return FailedPrecondition(
        str(err), reason=err.reason, metadata={"strategy": strategy, **logic.shortage_metadata(err.shortages)}
    )


class AllocationStepServicer(pb_grpc.AllocationStepServiceServicer):
    def __init__(self, store: AllocationStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def _customer(self, data: pb.AllocateInventoryInput) -> tuple[float, float] | None:
        address = logic.customer_location(data)
        if not isinstance(address, str):
            return address
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
                violations=[
                    ("allocate_inventory.customer_location", f"lat/lon or an address, required by {problem.strategy}")
                ],
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
        require_input(request, "allocate_inventory")
        data = request.allocate_inventory
        logic.validate_input(data)
        if data.plan_allocation_id:
            return await self._reuse(request)
        problem = logic.build_problem(data)
        # Planning is pure and may take a while (COST_OPTIMIZE): it is done before the barrier's
        # statement, and its outcome is only acted on inside the barrier, so duplicates and
        # late Executes still get the barrier's answer rather than a fresh plan.
        customer = await self._customer(data)
        planning = time.perf_counter()
        outcome = await self._plan(problem, customer)
        metrics.ALLOCATION_DURATION.labels(
            problem.strategy, "failed" if isinstance(outcome, AllocationError) else "allocated"
        ).observe(time.perf_counter() - planning)
        now = utcnow()
        expires_at = logic.expires_at(data, now, self.settings.saga.expiry.allocation)

        def decide() -> common_pb2.Allocation:
            if isinstance(outcome, AllocationError):
                raise _allocation_failure(outcome, problem.strategy)
            if expires_at <= now:
                raise FailedPrecondition(
                    "the request expired before its stock could be allocated",
                    reason="REQUEST_EXPIRED",
                    metadata={"expires_at": expires_at.isoformat()},
                )
            return common_pb2.Allocation(
                allocation_id=f"AL-{uuid.uuid4().hex}",
                saga_id=request.context.saga_id,
                strategy=logic.STRATEGY_VALUES[outcome.strategy],
                lines=[
                    common_pb2.AllocationLine(warehouse_id=line.warehouse_id, sku=line.sku, quantity=line.quantity)
                    for line in sorted(outcome.lines, key=lambda line: (line.warehouse_id, line.sku))
                ],
                expires_at=to_timestamp(expires_at),
                **fields(outcome, "optimal total_cost"),
                status=common_pb2.ALLOCATION_STATUS_ACTIVE,
            )

        return await self.store.allocate(request.context, data.order_id, decide, now)

    async def _reuse(self, request: pb.ExecuteRequest) -> pb.ExecuteResponse:
        """AllocateInventory with a plan made earlier: its lines, checked inside the barrier; the
        plan is used up in the same statement."""
        data = request.allocate_inventory
        try:
            plan: common_pb2.Allocation | None = await self.store.get(data.plan_allocation_id)
        except NotFound:
            plan = None
        now = utcnow()
        expires_at = logic.expires_at(data, now, self.settings.saga.expiry.allocation)

        def decide() -> common_pb2.Allocation:
            return plans.reuse(plan, data, request.context.saga_id, now, expires_at)

        return await self.store.allocate(request.context, data.order_id, decide, now, plan_id=data.plan_allocation_id)

    async def Compensate(self, request: pb.CompensateRequest, context) -> pb.CompensateResponse:
        return await self.store.release(request.context)


class AllocationServicer(StoreServicer[AllocationStore], pb_grpc.AllocationServiceServicer):
    async def GetAllocation(self, request: pb.GetAllocationRequest, context) -> pb.GetAllocationResponse:
        require("allocation_id", request.allocation_id)
        return pb.GetAllocationResponse(allocation=await self.store.get(request.allocation_id))

    async def ListAllocations(self, request: pb.ListAllocationsRequest, context) -> pb.ListAllocationsResponse:
        offset, limit = page_window(request.page_size, request.page_token)
        status = status_filter(request.status, logic.STATUS_TO_DB, "allocation")
        found = await self.store.list(saga_id=request.saga_id, status=status, offset=offset, limit=limit)
        return pb.ListAllocationsResponse(allocations=found, next_page_token=next_page_token(offset, limit, len(found)))

    async def CancelAllocation(self, request: pb.CancelAllocationRequest, context) -> pb.CancelAllocationResponse:
        require("allocation_id", request.allocation_id)
        if len(request.reason) > logic.MAX_TEXT:
            raise InvalidArgument("reason too long", violations=[("reason", f"at most {logic.MAX_TEXT} characters")])
        allocation, changed = await self.store.cancel(request.allocation_id)
        if changed:
            log.info(
                "allocation %s cancelled by operator: %s", request.allocation_id, request.reason or "no reason given"
            )
        return pb.CancelAllocationResponse(allocation=allocation)

    async def SettleAllocation(self, request: pb.SettleAllocationRequest, context) -> pb.SettleAllocationResponse:
        """The coordinator ending a reservation's allocation (docs/lifecycle.md): the one place
        an allocation expires, so the expiry is counted here, once."""
        require("allocation_id", request.allocation_id)
        if request.status not in SETTLED:
            raise InvalidArgument(
                "status must be FULFILLED, CANCELLED or EXPIRED",
                violations=[("status", "FULFILLED, CANCELLED or EXPIRED")],
            )
        if len(request.reason) > logic.MAX_TEXT:
            raise InvalidArgument("reason too long", violations=[("reason", f"at most {logic.MAX_TEXT} characters")])
        allocation, changed = await self.store.settle(request.allocation_id, logic.STATUS_TO_DB[request.status])
        if changed:
            if request.status == common_pb2.ALLOCATION_STATUS_EXPIRED:
                metrics.EXPIRED_ALLOCATIONS.inc()
            log.info(
                "allocation %s %s: %s",
                request.allocation_id,
                logic.STATUS_TO_DB[request.status],
                request.reason or "settled",
                extra={"saga_id": allocation.saga_id},
            )
        return pb.SettleAllocationResponse(allocation=allocation)

    async def ExtendAllocation(self, request: pb.ExtendAllocationRequest, context) -> pb.ExtendAllocationResponse:
        require("allocation_id", request.allocation_id)
        until = future_until(request)
        return pb.ExtendAllocationResponse(allocation=await self.store.extend(request.allocation_id, until))


SETTLED = (
    common_pb2.ALLOCATION_STATUS_FULFILLED,
    common_pb2.ALLOCATION_STATUS_CANCELLED,
    common_pb2.ALLOCATION_STATUS_EXPIRED,
)


async def load_solver() -> None:
    """Import HiGHS and numpy in the background after startup (about 0.1-0.3 s here), so the
    first COST_OPTIMIZE saga does not pay for it."""
    try:
        await asyncio.to_thread(__import__, "highspy")
    except ImportError:  # pragma: no cover - a dependency; the strategy reports it when used
        log.warning("highspy is not installed: COST_OPTIMIZE will fail")


async def build(settings: Settings) -> App:
    db = await open_service_database(settings, models.metadata, models.__file__)
    store = AllocationStore(db)
    return App(
        services=[
            registration(AllocationServicer(store), pb_grpc, "AllocationService"),
            registration(AllocationStepServicer(store, settings), pb_grpc, "AllocationStepService"),
        ],
        background=[load_solver],
        on_stop=[db.close],
    )
