"""`invsaga seed` against real warehouse and inventory processes."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.launcher import free_port
from invsaga.seed import SeedError, load_seed, seed_file
from invsaga.warehouse.v1 import warehouse_pb2, warehouse_pb2_grpc

DEMO = Path(__file__).resolve().parents[2] / "invsaga" / "demo_data.yaml"


async def all_warehouses(channel) -> list:
    reply = await warehouse_pb2_grpc.WarehouseServiceStub(channel).ListWarehouses(
        warehouse_pb2.ListWarehousesRequest(page_size=1000)
    )
    return list(reply.warehouses)


async def all_stock(channel) -> list:
    stub = inventory_pb2_grpc.InventoryServiceStub(channel)
    found, token = [], ""
    while True:
        reply = await stub.ListStock(inventory_pb2.ListStockRequest(page_size=50, page_token=token))
        found.extend(reply.stock)
        token = reply.next_page_token
        if not token:
            return found


async def test_demo_data_seeds_every_warehouse_assortment_and_stock_row(mesh_factory):
    mesh = mesh_factory(services=("warehouse", "inventory"))
    seed = load_seed(DEMO)
    wh_addr, inv_addr = mesh.address("warehouse"), mesh.address("inventory")

    started = time.monotonic()
    summary = await seed_file(DEMO, wh_addr, inv_addr)
    took = time.monotonic() - started

    assert summary == f"{len(seed.warehouses)} warehouses, {len(seed.stock)} stock rows"
    assert took < 15  # ~140 calls, 32 in flight: well under a second on an idle machine
    async with grpc.aio.insecure_channel(wh_addr) as wh, grpc.aio.insecure_channel(inv_addr) as inv:
        warehouses = await all_warehouses(wh)
        stock = await all_stock(inv)
        # Seeding again changes nothing and keeps SKUs a warehouse carried before.
        await warehouse_pb2_grpc.WarehouseServiceStub(wh).AddAssortment(
            warehouse_pb2.AddAssortmentRequest(warehouse_id="WH-BJ-01", skus=["SKU-EXTRA"])
        )
        await seed_file(DEMO, wh_addr, inv_addr)
        again = await all_warehouses(wh)
        stock_again = await all_stock(inv)

    assert {w.warehouse_id: _as_seeded(w) for w in warehouses} == {w.warehouse_id: w for w in seed.warehouses}
    assert {w.warehouse_id: sorted(w.skus) for w in warehouses} == {
        wid: sorted(skus) for wid, skus in seed.assortment().items()
    }
    expected_stock = {(r.warehouse_id, r.sku): (r.product_id, r.on_hand, r.bin) for r in seed.stock}
    assert {(s.warehouse_id, s.sku): (s.product_id, s.on_hand, s.bin) for s in stock} == expected_stock
    assert all(s.available == s.on_hand and s.locked == 0 for s in stock)
    assert len(again) == len(warehouses)
    assert "SKU-EXTRA" in next(w for w in again if w.warehouse_id == "WH-BJ-01").skus
    assert {(s.warehouse_id, s.sku): (s.product_id, s.on_hand, s.bin) for s in stock_again} == expected_stock


def _as_seeded(warehouse: common_pb2.Warehouse) -> common_pb2.Warehouse:
    """A warehouse as the seed file describes it: without its assortment and update time."""
    copy = common_pb2.Warehouse()
    copy.CopyFrom(warehouse)
    copy.ClearField("skus")
    copy.ClearField("updated_at")
    return copy


async def test_an_unreachable_service_is_a_seed_error_naming_it(mesh_factory):
    mesh = mesh_factory(services=("warehouse",))
    nobody = f"127.0.0.1:{free_port()}"

    with pytest.raises(SeedError) as caught:
        await seed_file(DEMO, mesh.address("warehouse"), nobody)

    assert "UNAVAILABLE" in str(caught.value)
    assert nobody in str(caught.value)
