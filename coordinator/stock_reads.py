"""Stock reads the coordinator makes before it persists a saga (StartTransfer's checks, a
reservation confirming a plan): units available per (warehouse, SKU), each read with a
deadline, a bounded number at once. A row that does not exist has none available."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import grpc

from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.runtime.errors import Unavailable

READ_TIMEOUT = 5.0  # seconds for each read
READS_IN_FLIGHT = 16  # reads at once, for a request of many lines
T = TypeVar("T")


async def read(call: Awaitable[T], unavailable: str) -> T | None:
    """The answer of a read, None if it found nothing (NOT_FOUND); ``Unavailable`` (with the
    message ``unavailable``) on any other error."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise Unavailable(unavailable) from None


async def available(channel: grpc.aio.Channel, rows: Sequence[tuple[str, str]], unavailable: str) -> list[int]:
    """Units available at each (warehouse_id, sku) of ``rows``, in order; ``Unavailable``
    (with the message ``unavailable``) if the inventory service does not answer."""
    stub = inventory_pb2_grpc.InventoryServiceStub(channel)
    limit = asyncio.Semaphore(READS_IN_FLIGHT)

    async def one(warehouse_id: str, sku: str) -> int:
        async with limit:
            request = inventory_pb2.GetStockRequest(warehouse_id=warehouse_id, sku=sku)
            answer = await read(stub.GetStock(request, timeout=READ_TIMEOUT), unavailable)
            return 0 if answer is None else answer.stock.available

    return list(await asyncio.gather(*(one(w, s) for w, s in rows)))
