"""``invsaga demo``'s transfer scenarios (SPEC §10), run on the plain mesh after its orders."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.demo import Client, Row, why
from invsaga.logistics.v1 import logistics_pb2, logistics_pb2_grpc
from invsaga.runtime.errors import RpcFailure

SOURCE, DESTINATION, SKU = "WH-BJ-01", "WH-CD-01", "SKU-019"


def transfer(quantity: int, to_warehouse: str = DESTINATION) -> pb.TransferRequest:
    return pb.TransferRequest(
        request_id=uuid.uuid4().hex,
        from_warehouse=SOURCE,
        to_warehouse=to_warehouse,
        items=[common_pb2.Item(product_id="PROD-019", sku=SKU, quantity=quantity)],
        reason="demo",
    )


async def _until(client: Client, saga_id: str, state: int) -> pb.Saga:
    for _ in range(400):
        saga = (await client.stub.GetSaga(pb.GetSagaRequest(saga_id=saga_id))).saga
        if saga.transfer_state == state:
            return saga
        await asyncio.sleep(0.05)
    return saga


def _state(saga: pb.Saga) -> str:
    return pb.TransferState.Name(saga.transfer_state).removeprefix("TRANSFER_STATE_")


async def transfer_scenarios(client: Client, logistics_address: str) -> list[Row]:
    rows = []
    async with grpc.aio.insecure_channel(logistics_address) as channel:
        logistics = logistics_pb2_grpc.LogisticsServiceStub(channel)
        saga, secs = await client.run(transfer(10))
        if saga.status == pb.SAGA_STATUS_COMPLETED:
            for status in (common_pb2.PICKLIST_STATUS_PROCESSING, common_pb2.PICKLIST_STATUS_COMPLETED):
                await logistics.UpdatePicklistStatus(
                    logistics_pb2.UpdatePicklistStatusRequest(picklist_id=saga.picklists[0].picklist_id, status=status)
                )
            await _until(client, saga.saga_id, pb.TRANSFER_STATE_IN_TRANSIT)
            received = pb.ReceiveTransferRequest(
                transfer_id=saga.saga_id, lines=[common_pb2.ReceivedLine(sku=SKU, quantity=9)]
            )
            answer = (await client.stub.ReceiveTransfer(received, timeout=10)).saga
            line = answer.transfer_lines[0]
            detail = f"{_state(answer)}: shipped {line.quantity}, received {line.received}, {line.missing} missing"
        else:
            detail = why(saga)
        rows.append(Row(f"transfer {SOURCE} → {DESTINATION}, short receipt", "COMPLETED", saga, detail, secs))

    saga, secs = await client.run(transfer(5))
    await client.stub.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id, reason="demo"))
    cancelled = await _until(client, saga.saga_id, pb.TRANSFER_STATE_CANCELLED)
    rows.append(Row("transfer cancelled before picking", "COMPLETED", saga, f"transfer {_state(cancelled)}", secs))

    # Refused before anything is written: no saga, the field that is wrong.
    for label, request in (
        ("transfer to a warehouse in maintenance", transfer(5, to_warehouse="WH-SH-02")),
        ("transfer above the source's stock", transfer(1000)),
    ):
        started = time.monotonic()
        try:
            saga, secs = await client.run(request)
            rows.append(Row(label, "FAILED_PRECONDITION", saga, why(saga), secs))
        except grpc.aio.AioRpcError as error:
            failure = RpcFailure.from_error(error)
            fields = "; ".join(f"{field}: {text}" for field, text in failure.violations)
            detail = f"refused {failure.reason} ({fields}), no saga written"
            rows.append(Row(label, "FAILED_PRECONDITION", None, detail, time.monotonic() - started, failure.code.name))
    return rows
