"""The allocation service over gRPC: AllocateInventory exactly once, compensation (null
compensation included), business and input failures with details, expiry."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import grpc
import pytest

from invsaga.allocation.v1 import allocation_pb2 as pb
from invsaga.allocation.v1 import allocation_pb2_grpc as pb_grpc
from invsaga.common.v1 import common_pb2
from invsaga.notify.v1 import notify_pb2, notify_pb2_grpc
from invsaga.runtime.convert import to_timestamp, utcnow
from invsaga.runtime.errors import RpcFailure
from services.allocation.logic import parse_shortage_metadata
from tests.support import metric_total, start_mesh

STEP = common_pb2.SAGA_STEP_ALLOCATE_INVENTORY


def _warehouse(wid: str, priority: int, capacity: int = 1000, lat: float = 0.0, lon: float = 0.0):
    return common_pb2.Warehouse(
        warehouse_id=wid,
        name=wid,
        priority=priority,
        capacity=capacity,
        status=common_pb2.WAREHOUSE_STATUS_ACTIVE,
        location=common_pb2.Location(lat=lat, lon=lon),
        cost=common_pb2.CostModel(per_unit=1.0, per_km_unit=0.001, per_shipment=5.0),
    )


def allocate_input(
    items: dict[str, int],
    strategy=common_pb2.ALLOCATION_STRATEGY_PRIORITY,
    *,
    capacity: int = 1000,
    location: common_pb2.Location | None = None,
    expires_at=None,
) -> pb.AllocateInventoryInput:
    """Two warehouses: WH-BJ (priority 10, Beijing, 6 of SKU-A) and WH-SH (priority 5, Shanghai)."""
    data = pb.AllocateInventoryInput(
        order_id="ORD-1",
        items=[common_pb2.Item(sku=sku, quantity=q) for sku, q in items.items()],
        strategy=strategy,
        warehouses=[_warehouse("WH-BJ", 10, capacity, 39.92, 116.44), _warehouse("WH-SH", 5, capacity, 31.23, 121.47)],
        stock=[
            common_pb2.StockLevel(warehouse_id="WH-BJ", sku="SKU-A", on_hand=8, locked=2, available=6),
            common_pb2.StockLevel(warehouse_id="WH-SH", sku="SKU-A", on_hand=20, available=20),
            common_pb2.StockLevel(warehouse_id="WH-SH", sku="SKU-B", on_hand=3, available=3),
        ],
        loads=[common_pb2.WarehouseLoad(warehouse_id="WH-BJ", locked_units=2)],
    )
    if location is not None:
        data.customer_location.CopyFrom(location)
    if expires_at is not None:
        data.expires_at.CopyFrom(to_timestamp(expires_at))
    return data


def context(saga_id: str) -> common_pb2.StepContext:
    return common_pb2.StepContext(saga_id=saga_id, step=STEP, idempotency_key=f"{saga_id}:{STEP}")


def new_saga() -> str:
    return f"saga-{uuid.uuid4().hex[:12]}"


async def rpc_failure(call) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return RpcFailure.from_error(caught.value)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """One allocation + notify mesh, shared by this module's tests (each uses its own saga ids)."""
    mesh = start_mesh(tmp_path_factory.mktemp("allocation"), services=("allocation", "notify"))
    yield mesh
    mesh.stop()


@pytest.fixture
async def allocation(mesh):
    async with grpc.aio.insecure_channel(mesh.address("allocation")) as channel:
        yield pb_grpc.AllocationStepServiceStub(channel), pb_grpc.AllocationServiceStub(channel)


async def test_execute_three_times_makes_one_allocation(allocation):
    steps, admin = allocation
    saga = new_saga()
    request = pb.ExecuteRequest(context=context(saga), allocate_inventory=allocate_input({"SKU-A": 10, "SKU-B": 2}))

    replies = [await steps.Execute(request, timeout=10) for _ in range(3)]

    first = replies[0].allocate_inventory.allocation
    assert all(r == replies[0] for r in replies)
    assert first.strategy == common_pb2.ALLOCATION_STRATEGY_PRIORITY
    assert first.status == common_pb2.ALLOCATION_STATUS_ACTIVE
    # PRIORITY: WH-BJ first (6 available), the rest from WH-SH.
    assert {(l.warehouse_id, l.sku, l.quantity) for l in first.lines} == {
        ("WH-BJ", "SKU-A", 6),
        ("WH-SH", "SKU-A", 4),
        ("WH-SH", "SKU-B", 2),
    }
    lifetime = first.expires_at.ToDatetime() - utcnow().replace(tzinfo=None)
    assert timedelta(minutes=29) < lifetime <= timedelta(minutes=30)
    listed = await admin.ListAllocations(pb.ListAllocationsRequest(saga_id=saga), timeout=10)
    assert [a.allocation_id for a in listed.allocations] == [first.allocation_id]
    assert (await admin.GetAllocation(pb.GetAllocationRequest(allocation_id=first.allocation_id))).allocation == first

    compensations = [await steps.Compensate(pb.CompensateRequest(context=context(saga)), timeout=10) for _ in range(3)]
    assert not any(c.null_compensation for c in compensations)
    got = await admin.GetAllocation(pb.GetAllocationRequest(allocation_id=first.allocation_id))
    assert got.allocation.status == common_pb2.ALLOCATION_STATUS_CANCELLED
    # A duplicate Execute after the compensation still answers with the first result.
    assert await steps.Execute(request, timeout=10) == replies[0]


async def test_concurrent_duplicate_executes_share_the_first_answer(allocation):
    """Racing duplicates: the later ones fail on the allocation's unique saga_id (before the
    barrier row) once the first commits, and must still get the first answer."""
    steps, admin = allocation
    saga = new_saga()
    request = pb.ExecuteRequest(context=context(saga), allocate_inventory=allocate_input({"SKU-A": 3, "SKU-B": 1}))

    replies = await asyncio.gather(*(steps.Execute(request, timeout=10) for _ in range(8)))

    assert all(r == replies[0] for r in replies)
    listed = await admin.ListAllocations(pb.ListAllocationsRequest(saga_id=saga), timeout=10)
    assert list(listed.allocations) == [replies[0].allocate_inventory.allocation]


async def test_compensate_before_execute_is_null_and_refuses_the_late_execute(allocation):
    steps, admin = allocation
    saga = new_saga()

    reply = await steps.Compensate(pb.CompensateRequest(context=context(saga)), timeout=10)
    assert reply.null_compensation
    again = await steps.Compensate(pb.CompensateRequest(context=context(saga)), timeout=10)
    assert again.null_compensation

    request = pb.ExecuteRequest(context=context(saga), allocate_inventory=allocate_input({"SKU-A": 1}))
    failure = await rpc_failure(steps.Execute(request, timeout=10))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.reason == "COMPENSATED_BEFORE_EXECUTE"
    listed = await admin.ListAllocations(pb.ListAllocationsRequest(saga_id=saga), timeout=10)
    assert list(listed.allocations) == []


async def test_strategy_failures_carry_details_and_persist_nothing(allocation):
    steps, admin = allocation
    saga = new_saga()

    def execute(data):
        return steps.Execute(pb.ExecuteRequest(context=context(saga), allocate_inventory=data), timeout=10)

    short = await rpc_failure(execute(allocate_input({"SKU-A": 30, "SKU-B": 5})))
    assert short.code == grpc.StatusCode.FAILED_PRECONDITION
    assert short.reason == "INSUFFICIENT_INVENTORY"
    assert [(s.sku, s.required, s.available) for s in parse_shortage_metadata(short.metadata)] == [
        ("SKU-A", 30, 26),
        ("SKU-B", 5, 3),
    ]

    full = await rpc_failure(execute(allocate_input({"SKU-A": 10}, capacity=4)))
    assert full.code == grpc.StatusCode.FAILED_PRECONDITION
    assert full.reason == "CAPACITY_EXCEEDED"

    nowhere = await rpc_failure(execute(allocate_input({"SKU-A": 1}, common_pb2.ALLOCATION_STRATEGY_NEAREST)))
    assert nowhere.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in nowhere.violations] == ["allocate_inventory.customer_location"]

    unknown = common_pb2.Location(address="Xyzzy-upon-Nowhere")
    bad_address = await rpc_failure(
        execute(allocate_input({"SKU-A": 1}, common_pb2.ALLOCATION_STRATEGY_NEAREST, location=unknown))
    )
    assert bad_address.code == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_address.violations[0][0] == "allocate_inventory.customer_location.address"
    assert "Xyzzy-upon-Nowhere" in bad_address.message

    empty = await rpc_failure(execute(pb.AllocateInventoryInput()))
    assert empty.code == grpc.StatusCode.INVALID_ARGUMENT
    assert ("allocate_inventory.items", "at least one item") in empty.violations

    listed = await admin.ListAllocations(pb.ListAllocationsRequest(saga_id=saga), timeout=10)
    assert list(listed.allocations) == []

    # Nothing was recorded for the saga, so a retry with a satisfiable order goes through:
    # NEAREST to an address in Shanghai picks WH-SH.
    shanghai = common_pb2.Location(address="上海市浦东新区")
    reply = await execute(allocate_input({"SKU-A": 5}, common_pb2.ALLOCATION_STRATEGY_NEAREST, location=shanghai))
    lines = reply.allocate_inventory.allocation.lines
    assert [(l.warehouse_id, l.sku, l.quantity) for l in lines] == [("WH-SH", "SKU-A", 5)]


async def test_allocations_expire_only_when_settled_and_each_expiry_counts_once(mesh):
    """The coordinator settles a reservation's allocation (docs/lifecycle.md): past its expiry
    an allocation stays ACTIVE here and nobody is told anything until then; SettleAllocation
    ends it once (FULFILLED, CANCELLED or EXPIRED), and an expiry counts in the metric once."""
    async with (
        grpc.aio.insecure_channel(mesh.address("allocation")) as channel,
        grpc.aio.insecure_channel(mesh.address("notify")) as notify_channel,
    ):
        steps, admin = pb_grpc.AllocationStepServiceStub(channel), pb_grpc.AllocationServiceStub(channel)
        notify = notify_pb2_grpc.NotifyServiceStub(notify_channel)
        soon, later, picked = new_saga(), new_saga(), new_saga()
        ids = {}
        for saga, expires in ((soon, timedelta(seconds=1)), (later, None), (picked, None)):
            data = allocate_input({"SKU-A": 1}, expires_at=utcnow() + expires if expires else None)
            reply = await steps.Execute(pb.ExecuteRequest(context=context(saga), allocate_inventory=data), timeout=10)
            ids[saga] = reply.allocate_inventory.allocation.allocation_id
        await asyncio.sleep(1.5)  # past the first one's expiry
        got = await admin.GetAllocation(pb.GetAllocationRequest(allocation_id=ids[soon]))
        assert got.allocation.status == common_pb2.ALLOCATION_STATUS_ACTIVE
        listed = await notify.ListNotifications(notify_pb2.ListNotificationsRequest(saga_id=soon))
        assert list(listed.notifications) == []

        before = metric_total(mesh, "allocation", "invsaga_expired_allocations_total")
        expired = common_pb2.ALLOCATION_STATUS_EXPIRED
        for _ in range(2):  # settling again to the same status is no change
            settled = await admin.SettleAllocation(pb.SettleAllocationRequest(allocation_id=ids[soon], status=expired))
            assert settled.allocation.status == expired
        assert metric_total(mesh, "allocation", "invsaga_expired_allocations_total") == before + 1
        other = await rpc_failure(
            admin.SettleAllocation(
                pb.SettleAllocationRequest(allocation_id=ids[soon], status=common_pb2.ALLOCATION_STATUS_FULFILLED)
            )
        )
        assert other.code == grpc.StatusCode.FAILED_PRECONDITION and other.reason == "ALLOCATION_SETTLED"
        fulfilled = await admin.SettleAllocation(
            pb.SettleAllocationRequest(allocation_id=ids[picked], status=common_pb2.ALLOCATION_STATUS_FULFILLED)
        )
        assert fulfilled.allocation.status == common_pb2.ALLOCATION_STATUS_FULFILLED
        bad = await rpc_failure(
            admin.SettleAllocation(
                pb.SettleAllocationRequest(allocation_id=ids[later], status=common_pb2.ALLOCATION_STATUS_ACTIVE)
            )
        )
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT

        # Extending moves an active allocation's expiry; a settled one is refused.
        until = to_timestamp(utcnow() + timedelta(hours=2))
        extended = await admin.ExtendAllocation(pb.ExtendAllocationRequest(allocation_id=ids[later], until=until))
        assert extended.allocation.expires_at == until
        refused = await rpc_failure(
            admin.ExtendAllocation(pb.ExtendAllocationRequest(allocation_id=ids[soon], until=until))
        )
        assert refused.code == grpc.StatusCode.FAILED_PRECONDITION and refused.reason == "ALLOCATION_SETTLED"

        refused = await rpc_failure(admin.CancelAllocation(pb.CancelAllocationRequest(allocation_id=ids[soon])))
        assert refused.code == grpc.StatusCode.FAILED_PRECONDITION and refused.reason == "ALLOCATION_EXPIRED"
        for _ in range(2):  # cancelling is idempotent
            cancelled = await admin.CancelAllocation(pb.CancelAllocationRequest(allocation_id=ids[later], reason="ops"))
            assert cancelled.allocation.status == common_pb2.ALLOCATION_STATUS_CANCELLED
        missing = await rpc_failure(admin.CancelAllocation(pb.CancelAllocationRequest(allocation_id="AL-none")))
        assert missing.code == grpc.StatusCode.NOT_FOUND
