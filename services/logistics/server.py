"""gRPC adapters of the logistics service: thin wrappers over logic.py, store.py and inventory."""

from __future__ import annotations

import functools
import logging

import grpc

from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.logistics.v1 import logistics_pb2 as pb
from invsaga.logistics.v1 import logistics_pb2_grpc as pb_grpc
from invsaga.runtime.channels import channel_to
from invsaga.runtime.config import Settings
from invsaga.runtime.convert import next_page_token, page_window
from invsaga.runtime.db import open_service_database
from invsaga.runtime.errors import DomainError, InvalidArgument, RpcFailure, Unavailable
from invsaga.runtime.server import App, registration
from services.common import StoreServicer, require, require_input, status_filter
from services.logistics import logic, models
from services.logistics.store import LogisticsStore

log = logging.getLogger("invsaga.logistics")

INVENTORY_TIMEOUT = 10.0


class LogisticsStepServicer(StoreServicer[LogisticsStore], pb_grpc.LogisticsStepServiceServicer):
    async def Execute(self, request: pb.ExecuteRequest, context) -> pb.ExecuteResponse:
        require_input(request, "generate_picklist")
        data = request.generate_picklist
        logic.validate_input(data)
        return await self.store.generate(request.context, data, logic.plan_picklists(data.lines))

    async def Compensate(self, request: pb.CompensateRequest, context) -> pb.CompensateResponse:
        return await self.store.cancel_pending(request.context)


def _inventory_failure(err: grpc.RpcError, action: str, picklist: common_pb2.Picklist) -> DomainError:
    """The inventory service's refusal as this service's error, keeping its reason and details."""
    failure = RpcFailure.from_error(err)
    metadata = {**failure.metadata, "picklist_id": picklist.picklist_id, "inventory_action": action}
    if failure.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(
            f"inventory service unavailable ({failure.message}); the picklist is unchanged, retry later",
            reason="INVENTORY_UNAVAILABLE",
            metadata=metadata,
        )
    # NOT_FOUND from inventory means the saga holds no locks there: for this picklist (which does
    # exist) that is a precondition failure, not a missing resource.
    code = grpc.StatusCode.FAILED_PRECONDITION if failure.code == grpc.StatusCode.NOT_FOUND else failure.code
    error = DomainError(
        f"inventory refused to {action} the picklist's locks: {failure.message}",
        reason=failure.reason or "INVENTORY_REFUSED",
        metadata=metadata,
        violations=failure.violations,
    )
    error.code = code
    return error


# ListPicklistChanges: how many changes one answer holds, by default and at most.
DEFAULT_CHANGES, MAX_CHANGES = 500, 1000
MAX_REASON = 256


class LogisticsServicer(pb_grpc.LogisticsServiceServicer):
    def __init__(self, store: LogisticsStore, inventory: inventory_pb2_grpc.InventoryServiceStub) -> None:
        self.store = store
        self.inventory = inventory

    async def GetPicklist(self, request: pb.GetPicklistRequest, context) -> pb.GetPicklistResponse:
        require("picklist_id", request.picklist_id)
        return pb.GetPicklistResponse(picklist=await self.store.get(request.picklist_id))

    async def ListPicklists(self, request: pb.ListPicklistsRequest, context) -> pb.ListPicklistsResponse:
        offset, limit = page_window(request.page_size, request.page_token)
        status = status_filter(request.status, logic.STATUS_TO_DB, "picklist")
        found = await self.store.list(
            saga_id=request.saga_id, warehouse_id=request.warehouse_id, status=status, offset=offset, limit=limit
        )
        return pb.ListPicklistsResponse(picklists=found, next_page_token=next_page_token(offset, limit, len(found)))

    async def _apply_to_locks(self, status: str, picklist: common_pb2.Picklist) -> None:
        """What the inventory service must do with the picklist's locks when it enters ``status``."""
        action = logic.INVENTORY_ACTION[status]
        locks = {"saga_id": picklist.saga_id, "warehouse_id": picklist.warehouse_id}
        if action == logic.HOLD:
            send, request = self.inventory.HoldLocks, inventory_pb2.HoldLocksRequest(**locks)
        elif action == logic.COMMIT:
            send, request = self.inventory.CommitLocks, inventory_pb2.CommitLocksRequest(**locks)
        else:
            reason = f"picklist {picklist.picklist_id} cancelled"
            send, request = self.inventory.ReleaseLocks, inventory_pb2.ReleaseLocksRequest(**locks, reason=reason)
        try:
            await send(request, timeout=INVENTORY_TIMEOUT)
        except grpc.RpcError as err:
            raise _inventory_failure(err, action, picklist) from None

    async def UpdatePicklistStatus(
        self, request: pb.UpdatePicklistStatusRequest, context
    ) -> pb.UpdatePicklistStatusResponse:
        require("picklist_id", request.picklist_id)
        if request.status not in logic.STATUS_TO_DB:
            raise InvalidArgument("unknown status", violations=[("status", "PROCESSING, COMPLETED or CANCELLED")])
        target = logic.STATUS_TO_DB[request.status]
        # Inventory first, then our status: the hold/commit/release calls are idempotent, so
        # if we crash (or the commit fails) after inventory acted, the picklist still shows
        # the old status and the operator's retry repeats the call harmlessly and commits.
        # The reverse order could leave a COMPLETED picklist whose stock was never consumed.
        apply_to_locks = functools.partial(self._apply_to_locks, target)
        picklist, previous = await self.store.change_status(request.picklist_id, target, apply_to_locks)
        if previous != target:
            log.info(
                "picklist %s: %s -> %s", picklist.picklist_id, previous, target, extra={"saga_id": picklist.saga_id}
            )
        return pb.UpdatePicklistStatusResponse(picklist=picklist)

    async def CancelPicklists(self, request: pb.CancelPicklistsRequest, context) -> pb.CancelPicklistsResponse:
        """A reservation released (SPEC §9): its PENDING picklists cancelled, their locks with them."""
        require("saga_id", request.saga_id)
        if len(request.saga_id) > 64:
            raise InvalidArgument("saga_id is too long", violations=[("saga_id", "at most 64 characters")])
        if len(request.reason) > MAX_REASON:
            raise InvalidArgument("reason is too long", violations=[("reason", f"at most {MAX_REASON} characters")])
        # Inventory first, as for UpdatePicklistStatus: ReleaseLocks is idempotent, so a
        # retry after a failed commit repeats it harmlessly.
        release = functools.partial(self._apply_to_locks, logic.CANCELLED)
        cancelled, untouched = await self.store.cancel_for_saga(request.saga_id, request.all_or_nothing, release)
        if cancelled:
            log.info(
                "saga %s: %d picklist(s) cancelled (%s)",
                request.saga_id,
                len(cancelled),
                request.reason or "released",
                extra={"saga_id": request.saga_id},
            )
        return pb.CancelPicklistsResponse(cancelled=cancelled, untouched=untouched)

    async def ListPicklistChanges(
        self, request: pb.ListPicklistChangesRequest, context
    ) -> pb.ListPicklistChangesResponse:
        if not 0 <= request.limit <= MAX_CHANGES:
            raise InvalidArgument(
                "limit out of range", violations=[("limit", f"0 (the default, {DEFAULT_CHANGES}) to {MAX_CHANGES}")]
            )
        return pb.ListPicklistChangesResponse(changes=await self.store.changes(request.limit or DEFAULT_CHANGES))

    async def AckPicklistChanges(self, request: pb.AckPicklistChangesRequest, context) -> pb.AckPicklistChangesResponse:
        if len(request.change_ids) > MAX_CHANGES:
            raise InvalidArgument("too many change ids", violations=[("change_ids", f"at most {MAX_CHANGES}")])
        if not request.change_ids:
            return pb.AckPicklistChangesResponse()
        return pb.AckPicklistChangesResponse(acknowledged=await self.store.acknowledge(list(request.change_ids)))


async def build(settings: Settings) -> App:
    db = await open_service_database(settings, models.metadata, models.__file__)
    store = LogisticsStore(db)
    inventory_channel = channel_to(settings, "inventory")
    return App(
        services=[
            registration(
                LogisticsServicer(store, inventory_pb2_grpc.InventoryServiceStub(inventory_channel)),
                pb_grpc,
                "LogisticsService",
            ),
            registration(LogisticsStepServicer(store), pb_grpc, "LogisticsStepService"),
        ],
        on_stop=[inventory_channel.close, db.close],
    )
