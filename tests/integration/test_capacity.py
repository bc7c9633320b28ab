"""A warehouse's capacity is enforced where stock is locked, not only when planned (SPEC §9)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import grpc
import pytest

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.runtime.errors import RpcFailure
from tests.saga_support import WH, MeshClient
from tests.support import logs_tail, start_mesh

CAPACITY = 50


@pytest.fixture(scope="module")
async def client(tmp_path_factory):
    mesh = start_mesh(tmp_path_factory.mktemp("capacity"))
    c = MeshClient(mesh)
    try:
        await c.seed([WH("WH-CAP", capacity=CAPACITY)], [("WH-CAP", f"SKU-C{k}", 1_000) for k in range(4)])
        yield c
        await c.check_books()
    except BaseException:
        print(logs_tail(mesh))
        raise
    finally:
        await c.close()
        mesh.stop()


async def locked_units(c: MeshClient) -> int:
    return sum(s.locked for s in await c.stock() if s.warehouse_id == "WH-CAP")


async def test_100_concurrent_sagas_racing_for_one_warehouses_capacity_never_pass_it(client):
    seen: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            seen.append(await locked_units(client))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    # 100 sagas of one unit each, on four SKUs (so that the rows they lock differ): 50 fit.
    ids = await asyncio.gather(*(client.start({f"SKU-C{k % 4}": 1}) for k in range(100)))
    sagas = await asyncio.gather(*(client.wait(i, timeout=120) for i in ids))
    done.set()
    await sampler
    outcomes = Counter((pb.SagaStatus.Name(s.status), s.failure.reason) for s in sagas)
    completed = outcomes[("SAGA_STATUS_COMPLETED", "")]
    assert completed == CAPACITY, outcomes
    assert set(outcomes) <= {("SAGA_STATUS_COMPLETED", ""), ("SAGA_STATUS_COMPENSATED", "CAPACITY_EXCEEDED")}, outcomes
    assert max(seen + [await locked_units(client)]) <= CAPACITY
    assert await locked_units(client) == CAPACITY
    # Each completed saga holds exactly its unit; the refused ones hold nothing.
    held = Counter(lock.saga_id for lock in await client.held_locks())
    assert held == Counter({s.saga_id: 1 for s in sagas if s.status == pb.SAGA_STATUS_COMPLETED})
    # Released reservations make room again.
    for saga in [s for s in sagas if s.status == pb.SAGA_STATUS_COMPLETED][:10]:
        await client.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id))
    assert await locked_units(client) == CAPACITY - 10
    again = await client.run({"SKU-C0": 10})
    assert again.status == pb.SAGA_STATUS_COMPLETED, again.failure
    assert await locked_units(client) == CAPACITY


async def test_a_lock_over_capacity_is_aborted_capacity_exceeded_and_persists_nothing(client):
    stub = inventory_pb2_grpc.InventoryStepServiceStub(client.channels["inventory"])
    before = await client.stock()
    saga_id = uuid.uuid4().hex
    request = inventory_pb2.ExecuteRequest(
        context=common_pb2.StepContext(saga_id=saga_id, step=common_pb2.SAGA_STEP_LOCK_INVENTORY),
        lock_inventory=inventory_pb2.LockInventoryInput(
            lines=[common_pb2.AllocationLine(warehouse_id="WH-CAP", sku="SKU-C1", quantity=CAPACITY + 1)],
            capacities={"WH-CAP": CAPACITY},
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Execute(request, timeout=10)
    failure = RpcFailure.from_error(caught.value)
    assert (failure.code, failure.reason) == (grpc.StatusCode.ABORTED, "CAPACITY_EXCEEDED")
    assert failure.metadata["warehouse_id"] == "WH-CAP" and failure.metadata["capacity"] == str(CAPACITY)
    assert await client.stock() == before and await client.held_locks(saga_id) == []


async def test_an_allocation_refused_for_capacity_keeps_its_shortages_in_the_saga(client):
    """An order no warehouse has the room for fails at AllocateInventory, and the saga's failure
    carries the allocation service's shortages (what did not fit), not only its reason."""
    saga = await client.run({"SKU-C2": CAPACITY + 5})
    assert saga.status == pb.SAGA_STATUS_COMPENSATED
    assert (saga.failure.step, saga.failure.reason) == ("AllocateInventory", "CAPACITY_EXCEEDED")
    assert [(s.sku, s.required) for s in saga.failure.shortages] == [("SKU-C2", CAPACITY + 5)]
