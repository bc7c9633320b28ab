"""Driving sagas in integration tests: seed a mesh, start sagas, follow them, check the books."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Iterable

import grpc

from invsaga.allocation.v1 import allocation_pb2, allocation_pb2_grpc
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.launcher import Mesh
from invsaga.warehouse.v1 import warehouse_pb2, warehouse_pb2_grpc

TERMINAL = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED)


@dataclass
class WH:
    warehouse_id: str
    priority: int = 5
    capacity: int = 10_000
    lat: float = 31.23
    lon: float = 121.47
    per_unit: float = 1.0
    per_km_unit: float = 0.0
    per_shipment: float = 0.0


class MeshClient:
    """Stubs for every process of a mesh, on one event loop."""

    def __init__(self, mesh: Mesh, coordinator: str | None = None) -> None:
        self.mesh = mesh
        self.channels = {name: grpc.aio.insecure_channel(mesh.address(name)) for name in mesh.services}
        if coordinator:
            self.channels["coordinator"] = grpc.aio.insecure_channel(coordinator)
        self.coordinator = pb_grpc.SagaCoordinatorServiceStub(self.channels["coordinator"])
        self.warehouse = warehouse_pb2_grpc.WarehouseServiceStub(self.channels["warehouse"])
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(self.channels["inventory"])
        self.allocation = allocation_pb2_grpc.AllocationServiceStub(self.channels["allocation"])

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()

    async def seed(self, warehouses: Iterable[WH], stock: Iterable[tuple[str, str, int]]) -> None:
        stock = list(stock)
        for w in warehouses:
            skus = sorted({sku for wid, sku, _ in stock if wid == w.warehouse_id})
            await self.warehouse.UpsertWarehouse(
                warehouse_pb2.UpsertWarehouseRequest(
                    warehouse=common_pb2.Warehouse(
                        warehouse_id=w.warehouse_id,
                        name=w.warehouse_id,
                        location=common_pb2.Location(address="", lat=w.lat, lon=w.lon),
                        capacity=w.capacity,
                        status=common_pb2.WAREHOUSE_STATUS_ACTIVE,
                        priority=w.priority,
                        cost=common_pb2.CostModel(
                            per_unit=w.per_unit, per_km_unit=w.per_km_unit, per_shipment=w.per_shipment
                        ),
                        skus=skus,
                    )
                )
            )
        for wid, sku, on_hand in stock:
            await self.inventory.SetStock(
                inventory_pb2.SetStockRequest(
                    warehouse_id=wid, sku=sku, product_id=f"P-{sku}", on_hand=on_hand, bin=f"B-{sku}"
                )
            )

    async def start(self, items: dict[str, int], **fields) -> str:
        request = order(items, **fields)
        reply = await self.coordinator.StartSaga(pb.StartSagaRequest(request=request), timeout=10)
        return reply.saga_id

    async def events(self, saga_id: str, after_seq: int = 0, event_types=()) -> list[pb.SagaEvent]:
        request = pb.WatchSagaRequest(saga_id=saga_id, after_seq=after_seq, event_types=event_types)
        return [r.event async for r in self.coordinator.WatchSaga(request)]

    async def wait(self, saga_id: str, timeout: float = 60.0, after_seq: int = 0) -> pb.Saga:
        """Follow WatchSaga to the terminal event, then return the saga."""
        await asyncio.wait_for(self.events(saga_id, after_seq), timeout)
        return await self.get(saga_id)

    async def get(self, saga_id: str) -> pb.Saga:
        return (await self.coordinator.GetSaga(pb.GetSagaRequest(saga_id=saga_id))).saga

    async def run(self, items: dict[str, int], **fields) -> pb.Saga:
        return await self.wait(await self.start(items, **fields))

    async def stock(self) -> list[common_pb2.StockLevel]:
        out, token = [], ""
        while True:
            reply = await self.inventory.ListStock(inventory_pb2.ListStockRequest(page_size=1000, page_token=token))
            out.extend(reply.stock)
            token = reply.next_page_token
            if not token:
                return out

    async def held_locks(self, saga_id: str = "") -> list[common_pb2.InventoryLock]:
        reply = await self.inventory.ListLocks(
            inventory_pb2.ListLocksRequest(saga_id=saga_id, status=common_pb2.LOCK_STATUS_HELD, page_size=1000)
        )
        return list(reply.locks)

    async def allocations(self, saga_id: str = "", status: int = 0) -> list[common_pb2.Allocation]:
        reply = await self.allocation.ListAllocations(
            allocation_pb2.ListAllocationsRequest(saga_id=saga_id, status=status, page_size=1000)
        )
        return list(reply.allocations)

    async def check_books(self, totals: dict[str, int] | None = None) -> None:
        """on_hand = available + locked everywhere, nothing negative, locked = Σ held locks,
        incoming = Σ transfer lines on their way there.

        With ``totals`` (per SKU: initial stock + adjustments), also that no unit was made or
        lost: Σ on_hand over warehouses + in transit + recorded discrepancies (missing) + units
        consumed by orders' picklists = the total.
        """
        stock = await self.stock()
        locks = await self.held_locks()
        held: dict[tuple[str, str], int] = {}
        for lock in locks:
            held[(lock.warehouse_id, lock.sku)] = held.get((lock.warehouse_id, lock.sku), 0) + lock.quantity
        lines = await self.transfer_lines()
        on_the_way: dict[tuple[str, str], int] = {}
        moving = (common_pb2.TRANSFER_LINE_STATUS_EXPECTED, common_pb2.TRANSFER_LINE_STATUS_IN_TRANSIT)
        for line in lines:
            if line.status in moving:
                key = (line.to_warehouse, line.sku)
                on_the_way[key] = on_the_way.get(key, 0) + line.quantity
        for s in stock:
            assert s.on_hand >= 0 and s.locked >= 0 and s.available >= 0 and s.incoming >= 0, s
            assert s.on_hand == s.available + s.locked, s
            assert s.locked == held.get((s.warehouse_id, s.sku), 0), (s, held.get((s.warehouse_id, s.sku)))
            assert s.incoming == on_the_way.get((s.warehouse_id, s.sku), 0), (s, on_the_way)
        if totals is None:
            return
        counted = {sku: 0 for sku in totals}
        for s in stock:
            counted[s.sku] = counted.get(s.sku, 0) + s.on_hand
        transfers = {line.transfer_id for line in lines}
        for line in lines:
            if line.status == common_pb2.TRANSFER_LINE_STATUS_IN_TRANSIT:
                counted[line.sku] += line.quantity
            counted[line.sku] += line.missing
        token = ""
        while True:
            reply = await self.inventory.ListLocks(
                inventory_pb2.ListLocksRequest(status=common_pb2.LOCK_STATUS_CONSUMED, page_size=1000, page_token=token)
            )
            for lock in reply.locks:
                if lock.saga_id not in transfers:  # an order's: the units left with the order
                    counted[lock.sku] += lock.quantity
            token = reply.next_page_token
            if not token:
                break
        assert counted == totals, (counted, totals)

    async def transfer_lines(self) -> list[common_pb2.TransferLine]:
        out, token = [], ""
        while True:
            reply = await self.inventory.ListTransfers(
                inventory_pb2.ListTransfersRequest(page_size=1000, page_token=token)
            )
            out.extend(reply.lines)
            token = reply.next_page_token
            if not token:
                return out


def order(items: dict[str, int], **fields) -> pb.InventoryRequest:
    request = pb.InventoryRequest(
        request_id=fields.pop("request_id", uuid.uuid4().hex),
        order_id=fields.pop("order_id", f"ORD-{uuid.uuid4().hex[:8]}"),
        customer_id=fields.pop("customer_id", "CUST-1"),
        items=[common_pb2.Item(product_id=f"P-{sku}", sku=sku, quantity=q, unit="pcs") for sku, q in items.items()],
        **fields,
    )
    return request


def step_statuses(saga: pb.Saga) -> dict[str, str]:
    return {s.name: pb.StepStatus.Name(s.status).removeprefix("STEP_STATUS_") for s in saga.steps}


async def all_terminal(c: "MeshClient", saga_ids: list[str], timeout: float) -> list[pb.Saga]:
    """Every saga of ``saga_ids`` once all are terminal (polled every 0.5 s), within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        sagas = [await c.get(s) for s in saga_ids]
        pending = [s for s in sagas if s.status not in TERMINAL]
        if not pending:
            return sagas
        assert time.monotonic() < deadline, f"{len(pending)} sagas not terminal, e.g. {pending[0]}"
        await asyncio.sleep(0.5)
