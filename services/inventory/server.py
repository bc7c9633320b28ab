"""gRPC adapters of the inventory service: request checks (logic.py), then the store."""

from __future__ import annotations

import logging


from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2_grpc as pb_grpc
from invsaga.runtime import metrics
from invsaga.runtime.config import Settings
from invsaga.runtime.convert import next_page_token, page_window
from invsaga.runtime.db import open_service_database
from invsaga.runtime.errors import InvalidArgument, Violations
from invsaga.runtime.server import App, registration
from services.common import StoreServicer, future_until, require_input, status_filter
from services.inventory import logic, models, transfer_rules
from services.inventory.store import InventoryStore

log = logging.getLogger("invsaga.inventory")

STEP_INPUTS = {
    common_pb2.SAGA_STEP_CHECK_AVAILABILITY: "check_availability",
    common_pb2.SAGA_STEP_LOCK_INVENTORY: "lock_inventory",
    common_pb2.SAGA_STEP_EXPECT_TRANSFER: "expect_transfer",
}


def _check_step(step: int) -> None:
    if step not in STEP_INPUTS and step != common_pb2.SAGA_STEP_UNSPECIFIED:
        raise InvalidArgument(
            "inventory hosts CHECK_AVAILABILITY, LOCK_INVENTORY and EXPECT_TRANSFER only",
            violations=[("context.step", "not an inventory step")],
        )


class InventoryStepServicer(pb_grpc.InventoryStepServiceServicer):
    def __init__(self, store: InventoryStore, settings: Settings) -> None:
        self.store = store
        self.lock_ttl = settings.saga.expiry.lock

    async def Execute(self, request: pb.ExecuteRequest, context) -> pb.ExecuteResponse:
        kind = require_input(request, "check_availability", "lock_inventory", "expect_transfer")
        expected = STEP_INPUTS.get(request.context.step)
        if expected is not None and expected != kind:
            raise InvalidArgument(
                f"step {common_pb2.SagaStep.Name(request.context.step)} does not take {kind}",
                violations=[("context.step", f"{kind} belongs to another step")],
            )
        _check_step(request.context.step)
        if kind == "check_availability":
            logic.validate_check_availability(request.check_availability)
            return await self.store.check_availability(request.context, request.check_availability)
        if kind == "expect_transfer":
            transfer_rules.validate_expect(request.expect_transfer)
            return await self.store.expect_transfer(request.context, request.expect_transfer)
        logic.validate_lock_inventory(request.lock_inventory)
        return await self.store.lock(request.context, request.lock_inventory, self.lock_ttl)

    async def Compensate(self, request: pb.CompensateRequest, context) -> pb.CompensateResponse:
        _check_step(request.context.step)
        return await self.store.compensate(request.context)


class InventoryServicer(StoreServicer[InventoryStore], pb_grpc.InventoryServiceServicer):
    async def SetStock(self, request: pb.SetStockRequest, context) -> pb.SetStockResponse:
        logic.validate_set_stock(request)
        return pb.SetStockResponse(stock=await self.store.set_stock(request))

    async def AdjustStock(self, request: pb.AdjustStockRequest, context) -> pb.AdjustStockResponse:
        logic.validate_adjust_stock(request)
        return pb.AdjustStockResponse(stock=await self.store.adjust_stock(request))

    async def GetStock(self, request: pb.GetStockRequest, context) -> pb.GetStockResponse:
        v = Violations()
        logic.check_id(v, "warehouse_id", request.warehouse_id)
        logic.check_id(v, "sku", request.sku, limit=logic.MAX_TEXT)
        v.raise_if_any("invalid stock key")
        return pb.GetStockResponse(stock=await self.store.get_stock(request.warehouse_id, request.sku))

    async def ListStock(self, request: pb.ListStockRequest, context) -> pb.ListStockResponse:
        offset, limit = page_window(request.page_size, request.page_token)
        found = await self.store.list_stock(request.warehouse_id, request.sku, offset, limit)
        return pb.ListStockResponse(stock=found, next_page_token=next_page_token(offset, limit, len(found)))

    async def ListLocks(self, request: pb.ListLocksRequest, context) -> pb.ListLocksResponse:
        status = status_filter(request.status, logic.LOCK_STATUS_TO_DB, "lock", "unknown lock status")
        offset, limit = page_window(request.page_size, request.page_token)
        found = await self.store.list_locks(request.saga_id, request.warehouse_id, status, offset, limit)
        return pb.ListLocksResponse(locks=found, next_page_token=next_page_token(offset, limit, len(found)))

    async def HoldLocks(self, request: pb.HoldLocksRequest, context) -> pb.HoldLocksResponse:
        logic.validate_lock_selector(request.saga_id, request.warehouse_id)
        return pb.HoldLocksResponse(locks=await self.store.hold(request.saga_id, request.warehouse_id))

    async def CommitLocks(self, request: pb.CommitLocksRequest, context) -> pb.CommitLocksResponse:
        logic.validate_lock_selector(request.saga_id, request.warehouse_id)
        return pb.CommitLocksResponse(locks=await self.store.consume(request.saga_id, request.warehouse_id))

    async def ReleaseLocks(self, request: pb.ReleaseLocksRequest, context) -> pb.ReleaseLocksResponse:
        logic.validate_lock_selector(request.saga_id, request.warehouse_id)
        v = Violations()
        logic.check_id(v, "reason", request.reason, limit=logic.MAX_TEXT, required=False)
        v.raise_if_any("invalid release")
        released, locks = await self.store.release(request.saga_id, request.warehouse_id)
        if released:
            log.info(
                "released %d lock(s) of saga %s: %s",
                released,
                request.saga_id,
                request.reason or "no reason given",
                extra={"saga_id": request.saga_id},
            )
        # Releasing what is already released (or consumed) changes nothing: a retried
        # cancellation must not fail.
        return pb.ReleaseLocksResponse(locks=locks)

    async def ExtendLocks(self, request: pb.ExtendLocksRequest, context) -> pb.ExtendLocksResponse:
        """The coordinator extending a reservation (docs/lifecycle.md): it alone expires locks."""
        logic.validate_lock_selector(request.saga_id, "")
        return pb.ExtendLocksResponse(extended=await self.store.extend(request.saga_id, future_until(request)))

    async def ReceiveTransfer(self, request: pb.ReceiveTransferRequest, context) -> pb.ReceiveTransferResponse:
        transfer_rules.validate_receipt(request)
        return pb.ReceiveTransferResponse(lines=await self.store.receive_transfer(request))

    async def ListTransfers(self, request: pb.ListTransfersRequest, context) -> pb.ListTransfersResponse:
        v = Violations()
        logic.check_id(v, "transfer_id", request.transfer_id, required=False)
        logic.check_id(v, "warehouse_id", request.warehouse_id, required=False)
        v.raise_if_any("invalid transfer filter")
        offset, limit = page_window(request.page_size, request.page_token)
        found = await self.store.list_transfers(request.transfer_id, request.warehouse_id, offset, limit)
        return pb.ListTransfersResponse(lines=found, next_page_token=next_page_token(offset, limit, len(found)))


async def build(settings: Settings) -> App:
    db = await open_service_database(settings, models.metadata, models.__file__)
    store = InventoryStore(db)
    metrics.track_inventory_utilisation(store.utilisation)
    return App(
        services=[
            registration(InventoryServicer(store), pb_grpc, "InventoryService"),
            registration(InventoryStepServicer(store, settings), pb_grpc, "InventoryStepService"),
        ],
        on_stop=[db.close],
    )
