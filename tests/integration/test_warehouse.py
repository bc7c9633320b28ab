"""The warehouse service's QueryWarehouses step and the catalog it keeps in memory: the
servicers in process, two of them standing for two replicas of one database."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from invsaga.common.v1 import common_pb2
from invsaga.runtime.config import load_settings
from invsaga.runtime.db import create_engine, open_service_database
from invsaga.runtime.errors import NotFound
from invsaga.warehouse.v1 import warehouse_pb2 as pb
from services.warehouse import models
from services.warehouse.server import WarehouseServicer, WarehouseStepServicer
from services.warehouse.store import WarehouseStore
from tests.support import new_pg_database

ACTIVE = common_pb2.WAREHOUSE_STATUS_ACTIVE
MAINTENANCE = common_pb2.WAREHOUSE_STATUS_MAINTENANCE


class Replica:
    """One warehouse process: its own database pool and store (with its catalog), and both servicers."""

    def __init__(self, db) -> None:
        store = WarehouseStore(db)
        self.admin = WarehouseServicer(store)
        self.step = WarehouseStepServicer(store)

    async def upsert(self, wid: str, priority: int, status=ACTIVE) -> None:
        warehouse = common_pb2.Warehouse(
            warehouse_id=wid,
            name=f"warehouse {wid}",
            location=common_pb2.Location(address="上海市浦东新区", lat=31.22, lon=121.54),
            capacity=1000,
            status=status,
            priority=priority,
            cost=common_pb2.CostModel(per_unit=1.5, per_km_unit=0.002, per_shipment=12.0),
        )
        await self.admin.UpsertWarehouse(pb.UpsertWarehouseRequest(warehouse=warehouse), None)

    async def carry(self, wid: str, *skus: str) -> None:
        await self.admin.AddAssortment(pb.AddAssortmentRequest(warehouse_id=wid, skus=skus), None)

    async def query(self, skus, preferred=(), saga_id: str | None = None) -> pb.ExecuteResponse:
        saga_id = saga_id or str(uuid.uuid4())
        step = common_pb2.SAGA_STEP_QUERY_WAREHOUSES
        request = pb.ExecuteRequest(
            context=common_pb2.StepContext(saga_id=saga_id, step=step, idempotency_key=f"{saga_id}:{step}"),
            query_warehouses=pb.QueryWarehousesInput(skus=skus, preferred_warehouses=preferred),
        )
        return await self.step.Execute(request, None)

    async def found(self, skus, preferred=()) -> list[tuple[str, list[str]]]:
        reply = await self.query(skus, preferred)
        return [(w.warehouse_id, list(w.skus)) for w in reply.query_warehouses.warehouses]


@pytest.fixture
def database_url() -> str:
    return new_pg_database()


@pytest.fixture
async def replicas(database_url):
    """Two replicas on one database."""
    settings = load_settings("warehouse", env={}, database_url=database_url)
    dbs = [await open_service_database(settings, models.metadata, models.__file__) for _ in range(2)]
    yield [Replica(db) for db in dbs]
    for db in dbs:
        await db.close()


async def test_query_lists_active_carriers_with_only_the_requested_skus(replicas):
    one, _ = replicas
    await one.upsert("W1", priority=5)
    await one.upsert("W2", priority=9)
    await one.upsert("W3", priority=10, status=MAINTENANCE)
    await one.upsert("W4", priority=7)
    await one.carry("W1", "A", "B", "C")
    await one.carry("W2", "D", "B")
    await one.carry("W3", "A")
    await one.carry("W4", "Z")

    reply = await one.query(["B", "A", "X"])
    preferred = await one.found(["A", "B"], preferred=["W1"])
    nothing = await one.query(["X"])

    assert [(w.warehouse_id, list(w.skus)) for w in reply.query_warehouses.warehouses] == [
        ("W2", ["B"]),
        ("W1", ["A", "B"]),
    ]
    assert preferred == [("W1", ["A", "B"]), ("W2", ["B"])]
    # Apart from its SKUs, each warehouse is what GetWarehouse says.
    for w in reply.query_warehouses.warehouses:
        stored = (await one.admin.GetWarehouse(pb.GetWarehouseRequest(warehouse_id=w.warehouse_id), None)).warehouse
        stored.ClearField("skus")
        w.ClearField("skus")
        assert w == stored
    assert nothing.HasField("query_warehouses") and not nothing.query_warehouses.warehouses


async def test_admin_calls_list_by_status_page_replace_the_assortment_and_know_no_stranger(replicas):
    one, _ = replicas
    for wid, status in (("W1", ACTIVE), ("W2", MAINTENANCE), ("W3", ACTIVE)):
        await one.upsert(wid, priority=1, status=status)
    await one.carry("W1", "b", "A", "a")
    w3 = common_pb2.Warehouse(warehouse_id="W3", name="three", capacity=5, status=ACTIVE, skus=["Z", "Z"])
    await one.carry("W3", "A")
    replaced = await one.admin.UpsertWarehouse(pb.UpsertWarehouseRequest(warehouse=w3), None)

    active = await one.admin.ListWarehouses(pb.ListWarehousesRequest(status=ACTIVE), None)
    page1 = await one.admin.ListWarehouses(pb.ListWarehousesRequest(page_size=2), None)
    page2 = await one.admin.ListWarehouses(
        pb.ListWarehousesRequest(page_size=2, page_token=page1.next_page_token), None
    )
    w1 = (await one.admin.GetWarehouse(pb.GetWarehouseRequest(warehouse_id="W1"), None)).warehouse

    assert [w.warehouse_id for w in active.warehouses] == ["W1", "W3"]
    assert [w.warehouse_id for w in page1.warehouses] == ["W1", "W2"]
    assert [w.warehouse_id for w in page2.warehouses] == ["W3"] and page2.next_page_token == ""
    assert list(w1.skus) == ["A", "a", "b"] and w1.location.lat == pytest.approx(31.22)
    assert (replaced.warehouse.name, list(replaced.warehouse.skus)) == ("three", ["Z"])
    assert not replaced.warehouse.location.HasField("lat")
    for call in (
        one.admin.GetWarehouse(pb.GetWarehouseRequest(warehouse_id="W9"), None),
        one.admin.AddAssortment(pb.AddAssortmentRequest(warehouse_id="W9", skus=["A"]), None),
    ):
        with pytest.raises(NotFound) as caught:
            await call
        assert caught.value.reason == "WAREHOUSE_NOT_FOUND"


async def test_a_duplicate_query_returns_the_first_answer_even_after_the_catalog_changed(replicas):
    one, _ = replicas
    await one.upsert("W1", priority=5)
    await one.carry("W1", "A")
    saga_id = str(uuid.uuid4())

    first = await one.query(["A"], saga_id=saga_id)
    await one.upsert("W2", priority=9)
    await one.carry("W2", "A")
    again = await one.query(["A"], saga_id=saga_id)

    assert [w.warehouse_id for w in first.query_warehouses.warehouses] == ["W1"]
    assert again == first
    assert await one.found(["A"]) == [("W2", ["A"]), ("W1", ["A"])]


async def test_a_write_on_either_replica_is_seen_by_the_next_query_on_the_other(replicas):
    writer, reader = replicas
    await writer.upsert("W1", priority=5)
    await writer.upsert("W2", priority=3)
    await writer.carry("W1", "A")
    assert await reader.found(["A", "B"]) == [("W1", ["A"])]  # the reader's catalog is loaded

    await writer.carry("W2", "A", "B")
    assert await reader.found(["A", "B"]) == [("W1", ["A"]), ("W2", ["A", "B"])]

    await writer.upsert("W2", priority=8)
    assert await reader.found(["A", "B"]) == [("W2", ["A", "B"]), ("W1", ["A"])]

    await writer.upsert("W1", priority=5, status=MAINTENANCE)
    assert await reader.found(["A"]) == [("W2", ["A"])]

    # The reader's own write, and the writer's cached catalog seeing it.
    assert await writer.found(["A"]) == [("W2", ["A"])]
    await reader.upsert("W1", priority=5)
    assert await reader.found(["A"]) == [("W2", ["A"]), ("W1", ["A"])]
    assert await writer.found(["A"]) == [("W2", ["A"]), ("W1", ["A"])]


async def test_queries_running_together_on_a_stale_replica_answer_and_store_from_the_new_catalog(replicas):
    writer, reader = replicas
    await writer.upsert("W1", priority=5)
    await writer.carry("W1", "A")
    assert await reader.found(["A"]) == [("W1", ["A"])]  # the reader's catalog is loaded

    await writer.upsert("W2", priority=9)
    await writer.carry("W2", "A")
    saga_ids = [str(uuid.uuid4()) for _ in range(8)]
    first = await asyncio.gather(*(reader.query(["A"], saga_id=s) for s in saga_ids))
    again = await asyncio.gather(*(reader.query(["A"], saga_id=s) for s in saga_ids))

    for reply in first:
        assert [(w.warehouse_id, list(w.skus)) for w in reply.query_warehouses.warehouses] == [
            ("W2", ["A"]),
            ("W1", ["A"]),
        ]
    assert again == first


async def test_the_migrations_and_models_agree(database_url):
    settings = load_settings("warehouse", env={}, database_url=database_url)
    await (await open_service_database(settings, models.metadata, models.__file__)).close()
    engine = create_engine(database_url, "warehouse")
    try:
        async with engine.connect() as conn:
            drift = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), models.metadata)
            )
    finally:
        await engine.dispose()
    assert drift == [], "the migrations and models.py disagree"
