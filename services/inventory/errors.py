"""The inventory's domain errors: what a store operation refuses, as the gRPC status it maps to."""

from __future__ import annotations

from collections.abc import Sequence

from invsaga.common.v1 import common_pb2
from invsaga.runtime.errors import Aborted, FailedPrecondition, NotFound
from services.inventory import logic


class CapacityExceeded(Aborted):
    """The lock would pass a warehouse's capacity (units it may hold locked at once): ABORTED,
    retried like a lock conflict (another saga's release may make room)."""

    def __init__(self, warehouse_id: str, capacity: int, locked: int, requested: int) -> None:
        super().__init__(
            f"warehouse {warehouse_id} has room for {max(0, capacity - locked)} more locked unit(s) "
            f"(capacity {capacity}, {locked} locked); this lock needs {requested}",
            reason="CAPACITY_EXCEEDED",
            metadata={
                "warehouse_id": warehouse_id,
                "capacity": str(capacity),
                "locked": str(locked),
                "requested": str(requested),
            },
        )


class LockConflict(Aborted):
    """Another saga took the units first: names the line of the short stock row that did not fit."""

    def __init__(self, lines: Sequence[common_pb2.AllocationLine], warehouse_id: str, sku: str, available: int) -> None:
        line, left = logic.short_line([x for x in lines if (x.warehouse_id, x.sku) == (warehouse_id, sku)], available)
        super().__init__(
            f"cannot lock {line.quantity} of {sku} in {warehouse_id}: {left} available",
            reason="LOCK_CONFLICT",
            metadata={"warehouse_id": warehouse_id, "sku": sku, "required": str(line.quantity), "available": str(left)},
        )


class StockNotFound(NotFound):
    def __init__(self, warehouse_id: str, sku: str) -> None:
        super().__init__(
            f"no stock of {sku!r} in warehouse {warehouse_id!r}",
            reason="STOCK_NOT_FOUND",
            metadata={"warehouse_id": warehouse_id, "sku": sku},
        )


class StockRefused(FailedPrecondition):
    """An on_hand below the locked units (STOCK_BELOW_LOCKED) or below zero (NEGATIVE_STOCK)."""

    def __init__(self, row, message: str, reason: str = "STOCK_BELOW_LOCKED", **metadata: str) -> None:
        stored = {"warehouse_id": row.warehouse_id, "sku": row.sku, "on_hand": str(row.on_hand)}
        super().__init__(message, reason=reason, metadata={**stored, "locked": str(row.locked), **metadata})


class LocksNotFound(NotFound):
    def __init__(self, saga_id: str, warehouse_id: str) -> None:
        super().__init__(
            f"saga {saga_id!r} holds no locks" + (f" in {warehouse_id!r}" if warehouse_id else ""),
            reason="LOCKS_NOT_FOUND",
            metadata={"saga_id": saga_id, "warehouse_id": warehouse_id},
        )


class LocksNotHeld(FailedPrecondition):
    def __init__(self, saga_id: str, warehouse_id: str, locks: Sequence[common_pb2.InventoryLock], why: str) -> None:
        statuses = sorted({common_pb2.LockStatus.Name(lock.status) for lock in locks})
        super().__init__(
            f"the locks of saga {saga_id!r} are no longer held ({', '.join(statuses)}): {why}",
            reason="LOCKS_NOT_HELD",
            metadata={"saga_id": saga_id, "warehouse_id": warehouse_id, "statuses": ",".join(statuses)},
        )
