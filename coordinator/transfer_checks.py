"""What StartTransfer checks before it persists anything (SPEC §10, bad input): both warehouses
exist and are active, and the source has each item's quantity available. A refusal is
INVALID_ARGUMENT (an unknown warehouse) or FAILED_PRECONDITION (a warehouse not active, stock
short), each with a violation per field, and no saga row is written.

The saga's own steps check again: stock can move between this read and the lock, and then the
saga rolls back as any other does. Reads that do not answer raise ``Unavailable``, and
StartTransfer then leaves the checking to those steps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import grpc

from coordinator import stock_reads
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.errors import FailedPrecondition, InvalidArgument
from invsaga.warehouse.v1 import warehouse_pb2, warehouse_pb2_grpc


_UNAVAILABLE = "the warehouses of this transfer cannot be checked now"


async def _warehouse(stub: warehouse_pb2_grpc.WarehouseServiceStub, warehouse_id: str) -> common_pb2.Warehouse | None:
    request = warehouse_pb2.GetWarehouseRequest(warehouse_id=warehouse_id)
    answer = await stock_reads.read(stub.GetWarehouse(request, timeout=stock_reads.READ_TIMEOUT), _UNAVAILABLE)
    return None if answer is None else answer.warehouse


async def check_transfer(channels: Mapping[str, grpc.aio.Channel], transfer: pb.TransferRequest) -> None:
    """Refuse ``transfer`` (normalized) if an end is unknown or not active, or the source is short."""
    warehouses = warehouse_pb2_grpc.WarehouseServiceStub(channels["warehouse"])
    ends = {"from_warehouse": transfer.from_warehouse, "to_warehouse": transfer.to_warehouse}
    found = dict(zip(ends, await asyncio.gather(*(_warehouse(warehouses, w) for w in ends.values()))))
    unknown = [(f"transfer.{end}", f"no warehouse {ends[end]!r}") for end, w in found.items() if w is None]
    if unknown:
        raise InvalidArgument("unknown warehouse", reason="WAREHOUSE_NOT_FOUND", violations=unknown)
    closed = [
        (f"transfer.{end}", f"warehouse {ends[end]!r} is {common_pb2.WarehouseStatus.Name(w.status)}, not active")
        for end, w in found.items()
        if w is not None and w.status != common_pb2.WAREHOUSE_STATUS_ACTIVE
    ]
    if closed:
        raise FailedPrecondition(
            "a warehouse of this transfer is not active", reason="WAREHOUSE_NOT_ACTIVE", violations=closed
        )
    rows = [(transfer.from_warehouse, item.sku) for item in transfer.items]
    available = dict(
        zip((sku for _, sku in rows), await stock_reads.available(channels["inventory"], rows, _UNAVAILABLE))
    )
    short = [
        (
            f"transfer.items[{i}].quantity",
            f"{item.quantity} of {item.sku} wanted, {available[item.sku]} available at {transfer.from_warehouse}",
        )
        for i, item in enumerate(transfer.items)
        if item.quantity > available[item.sku]
    ]
    if short:
        raise FailedPrecondition(
            f"{transfer.from_warehouse} does not have the stock to send",
            reason="INSUFFICIENT_INVENTORY",
            violations=short,
        )
