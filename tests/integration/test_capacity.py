"""A warehouse's capacity is enforced where stock is locked, not only when planned (SPEC §9).

Capacity means what it means to the allocation service: the units a warehouse may hold locked
at once over all its SKUs (0: none). The inventory keeps those units per warehouse in a counter
row that every lock, release and consumption moves in the statement that moves the stock, so
after each test the counter is reconciled against the stock rows as well as the books.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import grpc
import psycopg
import pytest

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.runtime.db import conninfo
from invsaga.runtime.errors import RpcFailure
from tests.saga_support import WH, MeshClient
from tests.support import logs_tail, start_mesh

CAPACITY = 50
ROOM = 20  # WH-ROOM's capacity, for the direct Execute calls
CHURN_SKUS = [f"SKU-D{k}" for k in range(4)]


@pytest.fixture(scope="module")
async def client(tmp_path_factory):
    mesh = start_mesh(tmp_path_factory.mktemp("capacity"))
    c = MeshClient(mesh)
    try:
        await c.seed(
            [
                WH("WH-CAP", capacity=CAPACITY),
                WH("WH-ROOM", capacity=ROOM),
                WH("WH-CHURN", capacity=1_000),
                WH("WH-CHURN2", capacity=1_000),
            ],
            [("WH-CAP", f"SKU-C{k}", 1_000) for k in range(4)]
            + [("WH-ROOM", f"SKU-R{k}", 1_000) for k in range(2)]
            + [(w, sku, 1_000) for w in ("WH-CHURN", "WH-CHURN2") for sku in CHURN_SKUS],
        )
        yield c
        await check_all(c)
    except BaseException:
        print(logs_tail(mesh))
        raise
    finally:
        await c.close()
        mesh.stop()


def warehouse_loads(c: MeshClient) -> dict[str, tuple[int, int]]:
    """Per warehouse: (the inventory's locked-units counter, Σ locked over its stock rows).

    The counter is what capacity is enforced against; it is internal, so it is read from the
    inventory's schema (read only)."""
    with psycopg.connect(conninfo(c.mesh.database_url), autocommit=True, options="-c search_path=inventory") as conn:
        counters = dict(conn.execute("SELECT warehouse_id, locked FROM warehouse_load").fetchall())
        stock_sql = "SELECT warehouse_id, sum(locked)::bigint FROM stock GROUP BY warehouse_id"
        stock = dict(conn.execute(stock_sql).fetchall())
    return {w: (counters.get(w, 0), stock.get(w, 0)) for w in set(counters) | set(stock)}


async def check_all(c: MeshClient) -> None:
    """The books (stock against held locks) and the capacity counters against the stock."""
    await c.check_books()
    loads = warehouse_loads(c)
    assert all(counter == stock for counter, stock in loads.values()), loads


async def locked_units(c: MeshClient, warehouse_id: str = "WH-CAP") -> int:
    return sum(s.locked for s in await c.stock() if s.warehouse_id == warehouse_id)


def lock_request(saga_id: str, lines: dict[str, int], capacities: dict[str, int], warehouse_id: str = "WH-ROOM"):
    return inventory_pb2.ExecuteRequest(
        context=common_pb2.StepContext(saga_id=saga_id, step=common_pb2.SAGA_STEP_LOCK_INVENTORY),
        lock_inventory=inventory_pb2.LockInventoryInput(
            lines=[
                common_pb2.AllocationLine(warehouse_id=warehouse_id, sku=sku, quantity=q) for sku, q in lines.items()
            ],
            capacities=capacities,
        ),
    )


async def refusal(call) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return RpcFailure.from_error(caught.value)


async def test_100_concurrent_sagas_racing_for_one_warehouses_capacity_never_pass_it(client):
    seen: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            seen.append(await locked_units(client))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    # 100 sagas of one unit each, on four SKUs (so that the rows they lock differ and only the
    # warehouse's capacity makes them wait for one another): 50 fit.
    ids = await asyncio.gather(*(client.start({f"SKU-C{k % 4}": 1}) for k in range(100)))
    sagas = await asyncio.gather(*(client.wait(i, timeout=120) for i in ids))
    done.set()
    await sampler
    outcomes = Counter((pb.SagaStatus.Name(s.status), s.failure.step, s.failure.reason) for s in sagas)
    assert len(seen) > 1 and max(seen + [await locked_units(client)]) <= CAPACITY, (max(seen), outcomes)
    # Nothing is released during the run, so the warehouse fills to exactly its capacity; a saga
    # that did not fit is refused CAPACITY_EXCEEDED by the lock (planned while there was room)
    # or by the plan (it already saw the warehouse full), and rolled back.
    assert outcomes[("SAGA_STATUS_COMPLETED", "", "")] == CAPACITY, outcomes
    assert set(outcomes) <= {
        ("SAGA_STATUS_COMPLETED", "", ""),
        ("SAGA_STATUS_COMPENSATED", "LockInventory", "CAPACITY_EXCEEDED"),
        ("SAGA_STATUS_COMPENSATED", "AllocateInventory", "CAPACITY_EXCEEDED"),
    }, outcomes
    # The race this is about: sagas planned while there was room, refused where they lock
    # (which takes the capacity the coordinator passed on from QueryWarehouses).
    assert outcomes[("SAGA_STATUS_COMPENSATED", "LockInventory", "CAPACITY_EXCEEDED")] > 0, outcomes
    assert await locked_units(client) == CAPACITY
    # Each completed saga holds exactly its unit; the refused ones hold nothing and their
    # allocations were cancelled.
    held = Counter(lock.saga_id for lock in await client.held_locks())
    assert held == Counter({s.saga_id: 1 for s in sagas if s.status == pb.SAGA_STATUS_COMPLETED})
    for saga in sagas:
        if saga.failure.step == "LockInventory":
            # Retried like a lock conflict (a release may make room) before the saga gave up.
            assert next(step.attempts for step in saga.steps if step.name == "LockInventory") > 1, saga.steps
            assert saga.failure.code == "ABORTED"
            allocations = await client.allocations(saga.saga_id)
            assert [a.status for a in allocations] == [common_pb2.ALLOCATION_STATUS_CANCELLED]
    await check_all(client)
    # Released reservations make room again, exactly as much as they held.
    for saga in [s for s in sagas if s.status == pb.SAGA_STATUS_COMPLETED][:10]:
        await client.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id))
    assert await locked_units(client) == CAPACITY - 10
    again = await client.run({"SKU-C0": 10})
    assert again.status == pb.SAGA_STATUS_COMPLETED, again.failure
    assert await locked_units(client) == CAPACITY
    over = await client.run({"SKU-C1": 1})
    assert (over.status, over.failure.reason) == (pb.SAGA_STATUS_COMPENSATED, "CAPACITY_EXCEEDED")
    await check_all(client)


async def test_a_lock_over_capacity_is_aborted_capacity_exceeded_and_persists_nothing(client):
    stub = inventory_pb2_grpc.InventoryStepServiceStub(client.channels["inventory"])
    before, loads_before = await client.stock(), warehouse_loads(client)
    saga_id = uuid.uuid4().hex
    # Two SKUs' units that fit the capacity one by one but not together: neither row is taken.
    failure = await refusal(stub.Execute(lock_request(saga_id, {"SKU-R0": 10, "SKU-R1": ROOM - 9}, {"WH-ROOM": ROOM})))
    assert (failure.code, failure.reason) == (grpc.StatusCode.ABORTED, "CAPACITY_EXCEEDED")
    assert failure.metadata == {
        "warehouse_id": "WH-ROOM",
        "capacity": str(ROOM),
        "locked": "0",
        "requested": str(ROOM + 1),
    }
    assert await client.stock() == before and await client.held_locks(saga_id) == []
    assert warehouse_loads(client) == loads_before
    # Nothing was written for the step, not even its barrier row: the same step, asked again
    # within the capacity (as the coordinator retries it), locks.
    reply = await stub.Execute(lock_request(saga_id, {"SKU-R0": 10, "SKU-R1": ROOM - 10}, {"WH-ROOM": ROOM}))
    assert sum(lock.quantity for lock in reply.lock_inventory.locks) == ROOM
    assert await locked_units(client, "WH-ROOM") == ROOM
    # A duplicate gets the first answer and takes nothing more (the counter included).
    again = await stub.Execute(lock_request(saga_id, {"SKU-R0": 10, "SKU-R1": ROOM - 10}, {"WH-ROOM": ROOM}))
    assert again == reply
    assert warehouse_loads(client)["WH-ROOM"] == (ROOM, ROOM)
    # Full: one more unit is refused. The capacity a lock is given is the one that counts (the
    # warehouse's as QueryWarehouses found it for that saga): a larger one lets the unit in.
    failure = await refusal(stub.Execute(lock_request(uuid.uuid4().hex, {"SKU-R1": 1}, {"WH-ROOM": ROOM})))
    assert (failure.reason, failure.metadata["locked"]) == ("CAPACITY_EXCEEDED", str(ROOM))
    larger = uuid.uuid4().hex
    await stub.Execute(lock_request(larger, {"SKU-R1": 1}, {"WH-ROOM": ROOM + 1}))
    assert warehouse_loads(client)["WH-ROOM"] == (ROOM + 1, ROOM + 1)
    for done in (saga_id, larger):
        await client.inventory.ReleaseLocks(inventory_pb2.ReleaseLocksRequest(saga_id=done, reason="test"))
    # 0 means no room at all, as in allocation.
    failure = await refusal(stub.Execute(lock_request(uuid.uuid4().hex, {"SKU-R1": 1}, {"WH-ROOM": 0})))
    assert (failure.reason, failure.metadata["capacity"], failure.metadata["locked"]) == ("CAPACITY_EXCEEDED", "0", "0")
    assert await locked_units(client, "WH-ROOM") == 0
    bad = await refusal(stub.Execute(lock_request(uuid.uuid4().hex, {"SKU-R1": 1}, {"WH-ROOM": -1})))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    await check_all(client)


async def test_locks_and_releases_racing_over_rows_and_warehouses_all_succeed_and_keep_the_counters(client):
    """Releases of multi-SKU, multi-warehouse locks beside locks of some of the same rows. Each
    statement takes a warehouse's load row before its stock rows; locks the pipe sends together
    at two warehouses may still meet a release in a deadlock, and both sides go again, so every
    call succeeds and the counters end where the stock is."""
    stub = inventory_pb2_grpc.InventoryStepServiceStub(client.channels["inventory"])
    capacities = {"WH-CHURN": 1_000, "WH-CHURN2": 1_000}

    async def churn(k: int) -> None:
        for _ in range(8):
            saga_id = uuid.uuid4().hex
            # All four rows or a suffix of them, at one warehouse or the other or both, so that
            # some locks start at a row or warehouse a release is still to reach.
            skus = CHURN_SKUS[(k % 2) * (1 + k % 3) :]
            warehouses = [["WH-CHURN"], ["WH-CHURN2"], ["WH-CHURN", "WH-CHURN2"]][k % 3]
            lines = [
                common_pb2.AllocationLine(warehouse_id=w, sku=sku, quantity=1 + k % 3)
                for w in warehouses
                for sku in skus
            ]
            request = lock_request(saga_id, {}, capacities)
            request.lock_inventory.lines.extend(lines)
            await stub.Execute(request, timeout=30)
            await client.inventory.ReleaseLocks(inventory_pb2.ReleaseLocksRequest(saga_id=saga_id), timeout=30)

    await asyncio.gather(*(churn(k) for k in range(24)))
    loads = warehouse_loads(client)
    assert (loads["WH-CHURN"], loads["WH-CHURN2"]) == ((0, 0), (0, 0))
    await check_all(client)


async def test_an_allocation_refused_for_capacity_keeps_its_shortages_in_the_saga(client):
    """An order no warehouse has the room for fails at AllocateInventory, and the saga's failure
    carries the allocation service's shortages (what did not fit), not only its reason."""
    saga = await client.run({"SKU-C2": CAPACITY + 5})
    assert saga.status == pb.SAGA_STATUS_COMPENSATED
    assert (saga.failure.step, saga.failure.reason) == ("AllocateInventory", "CAPACITY_EXCEEDED")
    assert [(s.sku, s.required) for s in saga.failure.shortages] == [("SKU-C2", CAPACITY + 5)]
