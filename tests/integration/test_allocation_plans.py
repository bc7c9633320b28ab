"""REQUEST_TYPE_ALLOCATION (SPEC §4): a plan with an expiry and nothing locked, confirmed later
by a RESERVATION that names it (``allocation_id``), on a real mesh over PostgreSQL. A refused
confirmation writes no saga and takes no lock; every test ends with the books."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from invsaga.allocation.v1 import allocation_pb2
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2
from invsaga.runtime.errors import RpcFailure
from tests.saga_support import WH, MeshClient, step_statuses
from tests.support import start_mesh

TOTALS = {"SKU-P": 130, "SKU-Q": 40}


@pytest.fixture(scope="module")
async def client(tmp_path_factory):
    mesh = start_mesh(tmp_path_factory.mktemp("plans"))
    c = MeshClient(mesh)
    await c.seed(
        [WH("WH-PA", priority=9), WH("WH-PB", priority=1)],
        [("WH-PA", "SKU-P", 30), ("WH-PB", "SKU-P", 100), ("WH-PA", "SKU-Q", 40)],
    )
    yield c
    await c.close()
    mesh.stop()


async def refused(call) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return RpcFailure.from_error(caught.value)


async def locked(c: MeshClient) -> dict[tuple[str, str], int]:
    return {(s.warehouse_id, s.sku): s.locked for s in await c.stock()}


async def saga_ids(c: MeshClient) -> set[str]:
    listed = await c.coordinator.ListSagas(pb.ListSagasRequest(page_size=1000))
    return {s.saga_id for s in listed.sagas}


async def plan(c: MeshClient, items: dict[str, int], **fields) -> pb.Saga:
    saga = await c.run(items, request_type=pb.REQUEST_TYPE_ALLOCATION, **fields)
    assert saga.status == pb.SAGA_STATUS_COMPLETED, saga
    return saga


async def test_an_allocation_plans_without_locking_and_a_reservation_confirms_it(client):
    c = client
    before = await locked(c)
    planned = await plan(c, {"SKU-P": 50, "SKU-Q": 5}, preferred_warehouses=["WH-PB"])
    # Planned: warehouses, lines and cost, with an expiry; nothing locked, no picklist.
    assert step_statuses(planned) == {
        n: "SUCCEEDED" for n in ("QueryWarehouses", "CheckAvailability", "AllocateInventory")
    }
    allocation = planned.allocation
    assert allocation.allocation_id and allocation.status == common_pb2.ALLOCATION_STATUS_ACTIVE
    assert allocation.HasField("expires_at") and allocation.total_cost > 0
    assert sum(line.quantity for line in allocation.lines) == 55
    assert not planned.locks and not planned.picklists and not planned.HasField("reservation")
    assert await locked(c) == before
    assert await c.held_locks(planned.saga_id) == []
    await c.check_books(TOTALS)

    # Confirmed: the reservation takes the plan's lines as they are, and locks them there.
    confirm = {"allocation_id": allocation.allocation_id, "request_id": uuid.uuid4().hex, "order_id": "ORD-PLAN"}
    saga = await c.run({"SKU-P": 50, "SKU-Q": 5}, **confirm)
    assert saga.status == pb.SAGA_STATUS_COMPLETED, saga
    assert saga.allocation.allocation_id != allocation.allocation_id
    assert list(saga.allocation.lines) == list(allocation.lines)
    assert saga.allocation.total_cost == pytest.approx(allocation.total_cost)
    held = {(lock.warehouse_id, lock.sku): lock.quantity for lock in await c.held_locks(saga.saga_id)}
    assert held == {(line.warehouse_id, line.sku): line.quantity for line in allocation.lines}
    now_locked = await locked(c)
    for (warehouse_id, sku), quantity in held.items():
        assert now_locked[(warehouse_id, sku)] == before.get((warehouse_id, sku), 0) + quantity
    used = await c.allocation.GetAllocation(allocation_pb2.GetAllocationRequest(allocation_id=allocation.allocation_id))
    assert used.allocation.status == common_pb2.ALLOCATION_STATUS_FULFILLED
    await c.check_books(TOTALS)

    # Its retry is answered as the first was; a second confirmation of the plan is refused.
    assert await c.start({"SKU-P": 50, "SKU-Q": 5}, **confirm) == saga.saga_id
    sagas, still = await saga_ids(c), await locked(c)
    failure = await refused(c.start({"SKU-P": 50, "SKU-Q": 5}, allocation_id=allocation.allocation_id))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ALLOCATION_NOT_ACTIVE")
    assert [f for f, _ in failure.violations] == ["allocation_id"]
    assert await saga_ids(c) == sagas and await locked(c) == still

    await c.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id))
    assert await c.held_locks(saga.saga_id) == []
    await c.check_books(TOTALS)


async def test_an_expired_or_unknown_plan_is_refused_before_anything_is_written(client):
    c = client
    soon = Timestamp()
    soon.FromNanoseconds(time.time_ns() + 1_500_000_000)
    planned = await plan(c, {"SKU-P": 3}, expired_at=soon)
    plan_id = planned.allocation.allocation_id
    while time.time_ns() <= soon.ToNanoseconds():
        await asyncio.sleep(0.1)
    sagas, before = await saga_ids(c), await locked(c)
    failure = await refused(c.start({"SKU-P": 3}, allocation_id=plan_id))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ALLOCATION_EXPIRED")
    assert [f for f, _ in failure.violations] == ["allocation_id"]

    # Unknown, or an allocation that no ALLOCATION saga made (a reservation's own).
    reservation = await c.run({"SKU-P": 1})
    sagas, before = await saga_ids(c), await locked(c)
    for unknown in ("AL-" + uuid.uuid4().hex, reservation.allocation.allocation_id):
        failure = await refused(c.start({"SKU-P": 1}, allocation_id=unknown))
        assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "ALLOCATION_NOT_FOUND")
        assert [f for f, _ in failure.violations] == ["allocation_id"]
    # Other items than the plan's; an allocation_id on an ALLOCATION request.
    fresh = await plan(c, {"SKU-P": 2})
    sagas, before = await saga_ids(c), await locked(c)
    failure = await refused(c.start({"SKU-P": 3}, allocation_id=fresh.allocation.allocation_id))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "ALLOCATION_MISMATCH")
    assert [f for f, _ in failure.violations] == ["items[0]"]
    failure = await refused(
        c.start({"SKU-P": 2}, allocation_id=fresh.allocation.allocation_id, request_type=pb.REQUEST_TYPE_ALLOCATION)
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in failure.violations] == ["allocation_id"]
    assert await saga_ids(c) == sagas and await locked(c) == before
    await c.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=reservation.saga_id))
    await c.check_books(TOTALS)


async def test_a_plan_the_stock_no_longer_allows_is_refused(client):
    c = client
    planned = await plan(c, {"SKU-Q": 30})
    [line] = planned.allocation.lines
    assert (line.warehouse_id, line.quantity) == ("WH-PA", 30)
    # Stock taken away from under the plan (an operator's count): the plan no longer fits.
    await c.inventory.AdjustStock(
        inventory_pb2.AdjustStockRequest(warehouse_id="WH-PA", sku="SKU-Q", delta=-15, reason="count")
    )
    sagas, before = await saga_ids(c), await locked(c)
    failure = await refused(c.start({"SKU-Q": 30}, allocation_id=planned.allocation.allocation_id))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_INVENTORY")
    assert [f for f, _ in failure.violations] == ["allocation_id"]
    assert await saga_ids(c) == sagas and await locked(c) == before
    await c.check_books({**TOTALS, "SKU-Q": TOTALS["SKU-Q"] - 15})
    await c.inventory.AdjustStock(
        inventory_pb2.AdjustStockRequest(warehouse_id="WH-PA", sku="SKU-Q", delta=15, reason="found")
    )
    await c.check_books(TOTALS)


async def test_cancelling_a_plan_cancels_its_allocation(client):
    c = client
    planned = await plan(c, {"SKU-P": 4})
    plan_id = planned.allocation.allocation_id
    await c.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=planned.saga_id, reason="not ordering"))
    cancelled = await c.wait(planned.saga_id)
    assert cancelled.status == pb.SAGA_STATUS_COMPENSATED, cancelled
    got = await c.allocation.GetAllocation(allocation_pb2.GetAllocationRequest(allocation_id=plan_id))
    assert got.allocation.status == common_pb2.ALLOCATION_STATUS_CANCELLED
    sagas, before = await saga_ids(c), await locked(c)
    failure = await refused(c.start({"SKU-P": 4}, allocation_id=plan_id))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ALLOCATION_NOT_ACTIVE")
    assert await saga_ids(c) == sagas and await locked(c) == before
    await c.check_books(TOTALS)
