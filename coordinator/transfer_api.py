"""The transfer RPCs of the public service (SPEC §10): StartTransfer and ReceiveTransfer.

A mixin of ``CoordinatorServicer``: a transfer is started as any saga is (``_start``: the
gate, the insert, idempotency by request_id) and received through the inventory service,
which books the stock; the saga then records what was booked.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import grpc

from coordinator import transfers
from coordinator.commands import new_saga
from coordinator.registry import DEFINITIONS
from coordinator.transfer_checks import check_transfer
from coordinator.views import not_found, summary, tenant_scope
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.runtime import security
from invsaga.runtime.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound, RpcFailure, Unavailable

if TYPE_CHECKING:
    from coordinator.engine import Engine
    from coordinator.journal import Journal

log = logging.getLogger("invsaga.coordinator")

RECEIPT_TIMEOUT = 10.0
# The inventory service's answers passed on to the caller as they are (their reason and fields).
PASSED_ON: dict[grpc.StatusCode, type[DomainError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.NOT_FOUND: NotFound,
}


class TransferRpcs:
    engine: "Engine"
    journal: "Journal"
    _start: Callable[[pb.Saga, str, Any], Awaitable[pb.StartSagaResponse]]  # CoordinatorServicer's

    async def StartTransfer(self, request: pb.StartTransferRequest, context) -> pb.StartTransferResponse:
        if not request.HasField("transfer"):
            raise InvalidArgument("transfer is required", violations=[("transfer", "required")])
        transfer = transfers.normalize(request.transfer)
        if not transfer.request_id:
            transfer.request_id = uuid.uuid4().hex
        try:
            await check_transfer(self.engine.participants.channels, transfer)
        except Unavailable:
            # The reads did not answer in time (a busy or restarting participant): the saga's
            # own steps check the same before they lock, so the transfer goes on to them.
            log.warning(
                "transfer %s not checked before it starts: the warehouse or inventory service did not answer",
                transfer.request_id,
            )
        except DomainError:
            # A repeat of a transfer that started: its own lock may be what the source lacks
            # now, so it is answered as a repeat (or ALREADY_EXISTS) below, not refused here.
            if not await self.journal.request_id_taken(transfer.request_id):
                raise
        who = security.caller()
        saga_id = uuid.uuid4().hex
        gate = self.engine.gate
        try:
            await gate.acquire(saga_id, transfer.ByteSize(), context.time_remaining() if context else None)
            saga = new_saga(saga_id, transfers.request_of(transfer), DEFINITIONS[pb.SAGA_KIND_TRANSFER])
            saga.transfer.CopyFrom(transfer)
            started = await self._start(saga, transfers.transfer_hash(transfer), who)
        except BaseException:
            gate.release(saga_id)
            raise
        return pb.StartTransferResponse(saga_id=started.saga_id, saga=started.saga)

    async def ReceiveTransfer(self, request: pb.ReceiveTransferRequest, context) -> pb.ReceiveTransferResponse:
        if not request.transfer_id or len(request.transfer_id) > 64:
            raise InvalidArgument("transfer_id is required", violations=[("transfer_id", "1 to 64 characters")])
        scope = tenant_scope()
        row = await self.journal.load(request.transfer_id, scope)
        if row is None or row.saga.kind != pb.SAGA_KIND_TRANSFER:
            raise not_found(request.transfer_id)
        if row.status != pb.SAGA_STATUS_COMPLETED or row.saga.transfer_state == pb.TRANSFER_STATE_CANCELLED:
            state = transfers.state_name(row.saga.transfer_state) if row.saga.transfer_state else "not reserved"
            raise FailedPrecondition(
                f"transfer {request.transfer_id!r} has not shipped ({pb.SagaStatus.Name(row.status)}, {state})",
                reason="NOT_SHIPPED",
                metadata={"transfer_id": request.transfer_id},
            )
        stub = inventory_pb2_grpc.InventoryServiceStub(self.engine.participants.channels["inventory"])
        try:
            answer = await stub.ReceiveTransfer(
                inventory_pb2.ReceiveTransferRequest(transfer_id=request.transfer_id, lines=request.lines),
                timeout=RECEIPT_TIMEOUT,
            )
        except grpc.aio.AioRpcError as error:
            failure = RpcFailure.from_error(error)
            passed = PASSED_ON.get(failure.code)
            if passed is None:
                raise Unavailable("the inventory service did not book the receipt; try again") from None
            raise passed(
                failure.message, reason=failure.reason, metadata=failure.metadata, violations=failure.violations
            ) from None
        lines = list(answer.lines)
        saga = await self.engine.keeper.reservations.mutate(
            request.transfer_id, lambda s: transfers.received(s, lines), tenant=scope
        )
        if saga is None:
            raise not_found(request.transfer_id)
        brief = summary(saga.saga_id, saga.request_id, pb.SAGA_STATUS_COMPLETED)
        brief.kind = saga.kind
        brief.transfer_state = saga.transfer_state
        brief.transfer_lines.extend(saga.transfer_lines)
        return pb.ReceiveTransferResponse(saga=brief)
