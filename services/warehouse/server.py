"""gRPC adapters of the warehouse service: thin wrappers over logic.py and store.py."""

from __future__ import annotations

from invsaga.runtime.config import Settings
from invsaga.runtime.convert import next_page_token, page_window
from invsaga.runtime.db import open_service_database
from invsaga.runtime.errors import InvalidArgument
from invsaga.runtime.server import App, registration
from invsaga.warehouse.v1 import warehouse_pb2 as pb
from invsaga.warehouse.v1 import warehouse_pb2_grpc as pb_grpc
from services.common import StoreServicer, require, require_input, status_filter
from services.warehouse import logic, models
from services.warehouse.store import WarehouseStore


class WarehouseServicer(StoreServicer[WarehouseStore], pb_grpc.WarehouseServiceServicer):
    async def UpsertWarehouse(self, request: pb.UpsertWarehouseRequest, context) -> pb.UpsertWarehouseResponse:
        logic.validate_warehouse(request.warehouse)
        return pb.UpsertWarehouseResponse(warehouse=await self.store.upsert(request.warehouse))

    async def GetWarehouse(self, request: pb.GetWarehouseRequest, context) -> pb.GetWarehouseResponse:
        require("warehouse_id", request.warehouse_id)
        return pb.GetWarehouseResponse(warehouse=await self.store.get(request.warehouse_id))

    async def ListWarehouses(self, request: pb.ListWarehousesRequest, context) -> pb.ListWarehousesResponse:
        offset, limit = page_window(request.page_size, request.page_token)
        found = await self.store.list(status_filter(request.status, logic.STATUS_TO_DB, "warehouse"), offset, limit)
        return pb.ListWarehousesResponse(warehouses=found, next_page_token=next_page_token(offset, limit, len(found)))

    async def AddAssortment(self, request: pb.AddAssortmentRequest, context) -> pb.AddAssortmentResponse:
        logic.validate_assortment(request)
        warehouse = await self.store.add_assortment(request.warehouse_id, list(request.skus))
        return pb.AddAssortmentResponse(warehouse=warehouse)


class WarehouseStepServicer(StoreServicer[WarehouseStore], pb_grpc.WarehouseStepServiceServicer):
    async def Execute(self, request: pb.ExecuteRequest, context) -> pb.ExecuteResponse:
        if require_input(request, "query_warehouses", "validate_transfer") == "validate_transfer":
            logic.validate_transfer(request.validate_transfer)
            return await self.store.validate_transfer(request.context, request.validate_transfer)
        if not request.query_warehouses.skus:
            raise InvalidArgument("no SKUs to look for", violations=[("query_warehouses.skus", "at least one SKU")])
        return await self.store.query_warehouses(request.context, request.query_warehouses)

    async def Compensate(self, request: pb.CompensateRequest, context) -> pb.CompensateResponse:
        return await self.store.compensate(request.context)


async def build(settings: Settings) -> App:
    db = await open_service_database(settings, models.metadata, models.__file__)
    store = WarehouseStore(db)
    return App(
        services=[
            registration(WarehouseServicer(store), pb_grpc, "WarehouseService"),
            registration(WarehouseStepServicer(store), pb_grpc, "WarehouseStepService"),
        ],
        on_stop=[db.close],
    )
