"""Transfer commands of ``invsaga``: ``transfer FILE [--watch]`` and ``receive ID SKU=QTY...``.

They reach the coordinator as every client command does (``client_cli.channel_of``); errors end
as every command's do (``client_cli.run_command``: one line, exit 1 or 2).
"""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf import json_format

from invsaga.client_cli import UsageError, channel_of, load_message, saga_client
from invsaga.saga_view import console, describe, follow
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc


def transfer_from_dict(data: dict[str, Any]) -> pb.TransferRequest:
    """A TransferRequest from YAML/JSON (``from_warehouse``, ``to_warehouse``, ``items``...)."""
    data = dict(data.get("transfer", data))
    if "expected_arrival" in data and not isinstance(data["expected_arrival"], str):
        data["expected_arrival"] = str(data["expected_arrival"]).replace(" ", "T")
    return json_format.ParseDict(data, pb.TransferRequest())


def transfer_line(saga: pb.Saga) -> str:
    state = pb.TransferState.Name(saga.transfer_state).removeprefix("TRANSFER_STATE_")
    t = saga.transfer
    units = ", ".join(f"{i.sku}×{i.quantity}" for i in t.items)
    text = f"transfer {t.from_warehouse} -> {t.to_warehouse} ({units}): {state}"
    for line in saga.transfer_lines:
        text += f"\n  {line.sku}: shipped {line.quantity}, received {line.received}"
        if line.missing:
            text += f", [yellow]{line.missing} missing[/]"
    return text


async def transfer(args: argparse.Namespace) -> int:
    request = load_message(args.file, "TransferRequest", transfer_from_dict)
    async with channel_of(args, "coordinator") as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        reply = await stub.StartTransfer(pb.StartTransferRequest(transfer=request), timeout=10)
    print(reply.saga_id, flush=True)
    if not args.watch:
        return 0
    async with saga_client(args) as client:
        saga = await follow(client, reply.saga_id)
    describe(saga)
    console.print(transfer_line(saga))
    return 0 if saga.status == pb.SAGA_STATUS_COMPLETED else 1


def _received(pairs: list[str]) -> list[common_pb2.ReceivedLine]:
    lines = []
    for pair in pairs:
        sku, _, quantity = pair.rpartition("=")
        if not sku or not quantity.isdigit():
            raise UsageError(f"{pair!r}: expected SKU=QUANTITY")
        lines.append(common_pb2.ReceivedLine(sku=sku, quantity=int(quantity)))
    return lines


async def receive(args: argparse.Namespace) -> int:
    request = pb.ReceiveTransferRequest(transfer_id=args.transfer_id, lines=_received(args.lines))
    async with channel_of(args, "coordinator") as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        reply = await stub.ReceiveTransfer(request, timeout=10)
        saga = (await stub.GetSaga(pb.GetSagaRequest(saga_id=args.transfer_id), timeout=10)).saga
    saga.transfer_state = reply.saga.transfer_state
    console.print(transfer_line(saga))
    return 0
