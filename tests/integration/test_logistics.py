"""The logistics service over gRPC with the real inventory service: picklists exactly once,
one per warehouse in bin order, picking consumes or releases stock, bad transitions change
nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import pytest

from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.logistics.v1 import logistics_pb2 as pb
from invsaga.logistics.v1 import logistics_pb2_grpc as pb_grpc
from invsaga.runtime.convert import to_timestamp, utcnow
from invsaga.runtime.errors import RpcFailure
from tests.support import start_mesh

PENDING = common_pb2.PICKLIST_STATUS_PENDING
PROCESSING = common_pb2.PICKLIST_STATUS_PROCESSING
COMPLETED = common_pb2.PICKLIST_STATUS_COMPLETED
CANCELLED = common_pb2.PICKLIST_STATUS_CANCELLED

# (warehouse, sku) -> (on_hand, bin)
STOCK = {
    ("WH-A", "SKU-1"): (10, "B-02-01"),
    ("WH-A", "SKU-2"): (10, "A-10-01"),
    ("WH-A", "SKU-3"): (10, "A-02-07"),
    ("WH-B", "SKU-1"): (10, "C-01-01"),
}


def new_saga() -> str:
    return f"saga-{uuid.uuid4().hex[:12]}"


def step_context(saga_id: str, step: int) -> common_pb2.StepContext:
    return common_pb2.StepContext(saga_id=saga_id, step=step, idempotency_key=f"{saga_id}:{step}")


async def rpc_failure(call) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return RpcFailure.from_error(caught.value)


class Picking:
    """Stubs for one inventory + logistics mesh, and the saga steps a test needs from them."""

    def __init__(self, inventory_channel, logistics_channel):
        # Warehouse ids of its own, so that tests sharing a mesh never share a stock row.
        self.tag = uuid.uuid4().hex[:8]
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(inventory_channel)
        self.inventory_steps = inventory_pb2_grpc.InventoryStepServiceStub(inventory_channel)
        self.logistics = pb_grpc.LogisticsServiceStub(logistics_channel)
        self.steps = pb_grpc.LogisticsStepServiceStub(logistics_channel)

    def w(self, name: str) -> str:
        """This test's id of warehouse ``name`` ("WH-A")."""
        return f"{name}-{self.tag}"

    async def stock(self, warehouse: str, sku: str) -> common_pb2.StockLevel:
        reply = await self.inventory.GetStock(inventory_pb2.GetStockRequest(warehouse_id=self.w(warehouse), sku=sku))
        return reply.stock

    async def lock(self, saga_id: str, lines: dict[tuple[str, str], int]) -> None:
        """Step 4 (LockInventory) for ``lines``, as the coordinator runs it."""
        await self.inventory_steps.Execute(
            inventory_pb2.ExecuteRequest(
                context=step_context(saga_id, common_pb2.SAGA_STEP_LOCK_INVENTORY),
                lock_inventory=inventory_pb2.LockInventoryInput(
                    allocation_id=f"AL-{saga_id}",
                    lines=[
                        common_pb2.AllocationLine(warehouse_id=self.w(w), sku=s, quantity=q)
                        for (w, s), q in lines.items()
                    ],
                    expires_at=to_timestamp(utcnow() + timedelta(minutes=30)),
                ),
            ),
            timeout=10,
        )

    def generate_request(
        self, saga_id: str, lines: dict[tuple[str, str], int], priority: int = 5, urgent: bool = False
    ) -> pb.ExecuteRequest:
        return pb.ExecuteRequest(
            context=step_context(saga_id, common_pb2.SAGA_STEP_GENERATE_PICKLIST),
            generate_picklist=pb.GeneratePicklistInput(
                order_id=f"ORD-{saga_id}",
                priority=priority,
                is_urgent=urgent,
                lines=[
                    pb.PickRequestLine(warehouse_id=self.w(w), sku=s, quantity=q, bin=STOCK[(w, s)][1])
                    for (w, s), q in lines.items()
                ],
            ),
        )

    async def reserve(self, lines: dict[tuple[str, str], int], **kwargs) -> tuple[str, list[common_pb2.Picklist]]:
        """Lock then generate picklists for a new saga; returns the saga id and its picklists."""
        saga_id = new_saga()
        await self.lock(saga_id, lines)
        reply = await self.steps.Execute(self.generate_request(saga_id, lines, **kwargs), timeout=10)
        return saga_id, list(reply.generate_picklist.picklists)

    async def set_status(self, picklist_id: str, status: int):
        return await self.logistics.UpdatePicklistStatus(
            pb.UpdatePicklistStatusRequest(picklist_id=picklist_id, status=status), timeout=10
        )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """One inventory + logistics mesh, shared by this module's tests (each stocks warehouses of
    its own and asserts on the stock rows it alone touches)."""
    mesh = start_mesh(tmp_path_factory.mktemp("logistics"), services=("inventory", "logistics"))
    yield mesh
    mesh.stop()


@pytest.fixture
async def picking(mesh):
    async with (
        grpc.aio.insecure_channel(mesh.address("inventory")) as inventory_channel,
        grpc.aio.insecure_channel(mesh.address("logistics")) as logistics_channel,
    ):
        p = Picking(inventory_channel, logistics_channel)
        for (warehouse, sku), (on_hand, bin_code) in STOCK.items():
            await p.inventory.SetStock(
                inventory_pb2.SetStockRequest(warehouse_id=p.w(warehouse), sku=sku, on_hand=on_hand, bin=bin_code)
            )
        yield p


async def test_picklists_once_per_warehouse_in_bin_order(picking):
    saga_id = new_saga()
    lines = {("WH-A", "SKU-1"): 1, ("WH-A", "SKU-2"): 2, ("WH-A", "SKU-3"): 3, ("WH-B", "SKU-1"): 4}
    await picking.lock(saga_id, lines)
    request = picking.generate_request(saga_id, lines, priority=3)

    replies = [await picking.steps.Execute(request, timeout=10) for _ in range(3)]

    assert all(r == replies[0] for r in replies)
    made = replies[0].generate_picklist.picklists
    assert [p.warehouse_id for p in made] == [picking.w("WH-A"), picking.w("WH-B")]
    assert [(l.sequence, l.bin, l.sku, l.quantity) for l in made[0].lines] == [
        (1, "A-02-07", "SKU-3", 3),
        (2, "A-10-01", "SKU-2", 2),
        (3, "B-02-01", "SKU-1", 1),
    ]
    assert [(l.sequence, l.sku, l.quantity) for l in made[1].lines] == [(1, "SKU-1", 4)]
    assert all(p.status == PENDING and p.priority == 3 and p.saga_id == saga_id for p in made)
    listed = await picking.logistics.ListPicklists(pb.ListPicklistsRequest(saga_id=saga_id))
    assert {p.picklist_id for p in listed.picklists} == {p.picklist_id for p in made}
    got = await picking.logistics.GetPicklist(pb.GetPicklistRequest(picklist_id=made[0].picklist_id))
    assert got.picklist == made[0]

    # The pickers' queue: urgent first, then by priority.
    urgent_saga, _ = await picking.reserve({("WH-A", "SKU-1"): 1}, priority=1, urgent=True)
    high_saga, _ = await picking.reserve({("WH-A", "SKU-1"): 1}, priority=9)
    queue = await picking.logistics.ListPicklists(
        pb.ListPicklistsRequest(warehouse_id=picking.w("WH-A"), status=PENDING)
    )
    assert [p.saga_id for p in queue.picklists] == [urgent_saga, high_saga, saga_id]

    # Compensation cancels the saga's pending picklists once; the locks stay for LockInventory's
    # own compensation to release.
    for _ in range(3):
        undone = await picking.steps.Compensate(
            pb.CompensateRequest(context=step_context(saga_id, common_pb2.SAGA_STEP_GENERATE_PICKLIST)), timeout=10
        )
        assert not undone.null_compensation
    listed = await picking.logistics.ListPicklists(pb.ListPicklistsRequest(saga_id=saga_id))
    assert {p.status for p in listed.picklists} == {CANCELLED}
    assert (await picking.stock("WH-B", "SKU-1")).locked == 4


async def test_every_picklist_answered_is_the_one_stored(picking):
    # Urgent, over two warehouses, a SKU named twice (one line of the summed quantity): each
    # picklist read back, lines and all, equals the answer.
    saga_id = new_saga()
    await picking.lock(saga_id, {("WH-A", "SKU-1"): 2, ("WH-A", "SKU-2"): 1, ("WH-B", "SKU-1"): 4})
    request = picking.generate_request(
        saga_id, {("WH-B", "SKU-1"): 3, ("WH-A", "SKU-1"): 2, ("WH-A", "SKU-2"): 1}, priority=7, urgent=True
    )
    request.generate_picklist.lines.append(pb.PickRequestLine(warehouse_id=picking.w("WH-B"), sku="SKU-1", quantity=1))

    made = (await picking.steps.Execute(request, timeout=10)).generate_picklist.picklists
    assert [(p.warehouse_id, [(l.sequence, l.sku, l.quantity) for l in p.lines]) for p in made] == [
        (picking.w("WH-A"), [(1, "SKU-2", 1), (2, "SKU-1", 2)]),
        (picking.w("WH-B"), [(1, "SKU-1", 4)]),
    ]
    assert all(p.is_urgent and p.priority == 7 and p.order_id == f"ORD-{saga_id}" for p in made)
    for picklist in made:
        got = await picking.logistics.GetPicklist(pb.GetPicklistRequest(picklist_id=picklist.picklist_id))
        assert got.picklist == picklist


async def test_compensate_before_execute_is_null_and_refuses_the_late_execute(picking):
    steps, logistics = picking.steps, picking.logistics
    saga_id = new_saga()
    ctx = step_context(saga_id, common_pb2.SAGA_STEP_GENERATE_PICKLIST)
    for _ in range(2):
        reply = await steps.Compensate(pb.CompensateRequest(context=ctx), timeout=10)
        assert reply.null_compensation
    late = pb.ExecuteRequest(
        context=ctx,
        generate_picklist=pb.GeneratePicklistInput(
            lines=[pb.PickRequestLine(warehouse_id="WH-A", sku="S", quantity=1)]
        ),
    )
    failure = await rpc_failure(steps.Execute(late, timeout=10))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.reason == "COMPENSATED_BEFORE_EXECUTE"
    assert list((await logistics.ListPicklists(pb.ListPicklistsRequest(saga_id=saga_id))).picklists) == []

    bad = await rpc_failure(steps.Execute(pb.ExecuteRequest(context=ctx, generate_picklist=pb.GeneratePicklistInput())))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.violations == [("generate_picklist.lines", "at least one line")]


async def test_completing_consumes_the_stock_and_cancelling_releases_it(picking):
    _, (done, dropped) = await picking.reserve({("WH-A", "SKU-2"): 4, ("WH-B", "SKU-1"): 3})
    assert (await picking.stock("WH-A", "SKU-2")).locked == 4

    started = await picking.set_status(done.picklist_id, PROCESSING)
    assert started.picklist.status == PROCESSING
    finished = await picking.set_status(done.picklist_id, COMPLETED)
    assert finished.picklist.status == COMPLETED
    again = await picking.set_status(done.picklist_id, COMPLETED)  # a retried request changes nothing
    assert again.picklist.status == COMPLETED
    consumed = await picking.stock("WH-A", "SKU-2")
    assert (consumed.on_hand, consumed.locked, consumed.available) == (6, 0, 6)

    cancelled = await picking.set_status(dropped.picklist_id, CANCELLED)
    assert cancelled.picklist.status == CANCELLED
    released = await picking.stock("WH-B", "SKU-1")
    assert (released.on_hand, released.locked, released.available) == (10, 0, 10)

    # Cancelling after picking started releases the units too.
    _, (started_then_cancelled,) = await picking.reserve({("WH-A", "SKU-3"): 5})
    await picking.set_status(started_then_cancelled.picklist_id, PROCESSING)
    await picking.set_status(started_then_cancelled.picklist_id, CANCELLED)
    level = await picking.stock("WH-A", "SKU-3")
    assert (level.on_hand, level.locked) == (10, 0)


BAD_TRANSITIONS = [
    ((), COMPLETED),  # PENDING -> COMPLETED would skip picking
    ((PROCESSING,), PENDING),
    ((PROCESSING, COMPLETED), CANCELLED),
    ((CANCELLED,), PROCESSING),
]


async def test_bad_status_transitions_are_refused_and_change_nothing(picking):
    for path, refused in BAD_TRANSITIONS:
        _, (picklist,) = await picking.reserve({("WH-A", "SKU-1"): 2})
        for status in path:
            await picking.set_status(picklist.picklist_id, status)
        before_stock = await picking.stock("WH-A", "SKU-1")
        before = await picking.logistics.GetPicklist(pb.GetPicklistRequest(picklist_id=picklist.picklist_id))

        failure = await rpc_failure(picking.set_status(picklist.picklist_id, refused))

        assert failure.code == grpc.StatusCode.FAILED_PRECONDITION, (path, refused)
        assert failure.reason == "INVALID_STATUS_TRANSITION"
        assert failure.metadata["to"] == common_pb2.PicklistStatus.Name(refused).removeprefix("PICKLIST_STATUS_")
        after = await picking.logistics.GetPicklist(pb.GetPicklistRequest(picklist_id=picklist.picklist_id))
        assert after == before
        assert await picking.stock("WH-A", "SKU-1") == before_stock

    missing = await rpc_failure(picking.set_status("PL-none", PROCESSING))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    unknown = await rpc_failure(picking.set_status(picklist.picklist_id, common_pb2.PICKLIST_STATUS_UNSPECIFIED))
    assert unknown.code == grpc.StatusCode.INVALID_ARGUMENT
