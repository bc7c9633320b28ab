"""Inventory rules with no gRPC or database in sight: input validation, availability
summaries, lock expiry and the units a lock puts on each warehouse."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice

from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2 as pb
from invsaga.runtime.convert import from_timestamp, to_timestamp
from invsaga.runtime.errors import InvalidArgument, Violations
from services.common import MAX_LINES, MAX_TEXT, check_count, check_id, check_quantity, db_names, fields, totals

# Stock levels and adjustments are BIGINT columns; bounded far below their 2^63 - 1, so that
# no sum of them the SQL makes can overflow.
MAX_STOCK = 1_000_000_000_000

HELD, RELEASED, CONSUMED, EXPIRED = "held", "released", "consumed", "expired"
LOCK_STATUS_TO_DB = db_names(common_pb2.LockStatus)
LOCK_STATUS_FROM_DB = {v: k for k, v in LOCK_STATUS_TO_DB.items()}


def validate_set_stock(req: pb.SetStockRequest) -> None:
    v = Violations()
    check_id(v, "warehouse_id", req.warehouse_id)
    check_id(v, "sku", req.sku, limit=MAX_TEXT)
    check_id(v, "product_id", req.product_id, limit=MAX_TEXT, required=False)
    check_id(v, "bin", req.bin, required=False)
    if req.on_hand < 0:
        v.add("on_hand", "must be ≥ 0")
    elif req.on_hand > MAX_STOCK:
        v.add("on_hand", f"must be ≤ {MAX_STOCK:,}")
    v.raise_if_any("invalid stock")


def validate_adjust_stock(req: pb.AdjustStockRequest) -> None:
    v = Violations()
    check_id(v, "warehouse_id", req.warehouse_id)
    check_id(v, "sku", req.sku, limit=MAX_TEXT)
    check_id(v, "reason", req.reason, limit=MAX_TEXT, required=False)
    if req.delta == 0:
        v.add("delta", "must not be zero")
    elif abs(req.delta) > MAX_STOCK:
        v.add("delta", f"must be within ±{MAX_STOCK:,}")
    v.raise_if_any("invalid adjustment")


def validate_lock_selector(saga_id: str, warehouse_id: str) -> None:
    v = Violations()
    check_id(v, "saga_id", saga_id)
    check_id(v, "warehouse_id", warehouse_id, required=False)
    v.raise_if_any("invalid lock selector")


def validate_check_availability(inp: pb.CheckAvailabilityInput) -> None:
    v = Violations()
    check_count(v, "check_availability.items", len(inp.items), "item")
    for i, item in enumerate(inp.items[:MAX_LINES]):
        check_id(v, f"check_availability.items[{i}].sku", item.sku, limit=MAX_TEXT)
        check_quantity(v, f"check_availability.items[{i}].quantity", item.quantity)
    for i, wid in enumerate(inp.warehouse_ids):
        check_id(v, f"check_availability.warehouse_ids[{i}]", wid)
    v.raise_if_any("invalid availability check")


def validate_lock_inventory(inp: pb.LockInventoryInput) -> None:
    v = Violations()
    check_count(v, "lock_inventory.lines", len(inp.lines), "line")
    for i, line in enumerate(inp.lines[:MAX_LINES]):
        check_id(v, f"lock_inventory.lines[{i}].warehouse_id", line.warehouse_id)
        check_id(v, f"lock_inventory.lines[{i}].sku", line.sku, limit=MAX_TEXT)
        check_quantity(v, f"lock_inventory.lines[{i}].quantity", line.quantity)
    check_id(v, "lock_inventory.allocation_id", inp.allocation_id, required=False)
    check_id(v, "lock_inventory.order_id", inp.order_id, limit=MAX_TEXT, required=False)
    if len(inp.capacities) > MAX_LINES:
        v.add("lock_inventory.capacities", f"at most {MAX_LINES} warehouses")
    for warehouse_id, capacity in islice(inp.capacities.items(), MAX_LINES):
        check_id(v, f"lock_inventory.capacities[{warehouse_id[:64]!r}]", warehouse_id)
        if capacity < 0:
            v.add(f"lock_inventory.capacities[{warehouse_id[:64]!r}]", "must be ≥ 0")
    v.raise_if_any("invalid lock request")


def required_by_sku(items: Iterable[common_pb2.Item]) -> dict[str, int]:
    """Units wanted per SKU, in first-seen order (an order may name a SKU twice)."""
    return totals((item.sku, item.quantity) for item in items)


def summarize_availability(
    items: Sequence[common_pb2.Item],
    warehouse_ids: Sequence[str],
    stock: Sequence[common_pb2.StockLevel],
    locked_by_warehouse: Mapping[str, int],
) -> pb.CheckAvailabilityOutput:
    """Availability per SKU summed across the candidate warehouses; short only when the total is.

    A single warehouse lacking the full quantity is not a shortage: the allocation step may
    split the item across warehouses.
    """
    required = required_by_sku(items)
    available = totals((level.sku, level.available) for level in stock)
    per_item = [
        pb.ItemAvailability(sku=sku, required=q, available=available.get(sku, 0)) for sku, q in required.items()
    ]
    shortages = [
        common_pb2.Shortage(sku=a.sku, required=a.required, available=a.available)
        for a in per_item
        if a.available < a.required
    ]
    loads = [
        common_pb2.WarehouseLoad(warehouse_id=wid, locked_units=locked_by_warehouse.get(wid, 0))
        for wid in dict.fromkeys(warehouse_ids)
    ]
    return pb.CheckAvailabilityOutput(
        stock=sorted(stock, key=lambda s: (s.warehouse_id, s.sku)),
        loads=loads,
        items=per_item,
        shortages=shortages,
        sufficient=not shortages,
    )


def lock_expires_at(now: datetime, requested: datetime | None, ttl_seconds: float) -> datetime:
    """The earlier of the request's deadline and this service's lock time to live."""
    limit = now + timedelta(seconds=ttl_seconds)
    return limit if requested is None or requested > limit else requested


def ordered_lines(lines: Iterable[common_pb2.AllocationLine]) -> list[common_pb2.AllocationLine]:
    """Lines in (warehouse, SKU) order: every transaction takes stock row locks in the same
    order, so two concurrent lock requests can wait on each other but never deadlock."""
    return sorted(lines, key=lambda line: (line.warehouse_id, line.sku))


@dataclass(frozen=True)
class LockPlan:
    """What a LockInventory takes: its lines in lock order, the units per stock row, the ids."""

    now: datetime
    expires_at: datetime
    lines: list[common_pb2.AllocationLine]
    wanted: list[tuple[str, str, int]]
    lock_ids: list[str]
    # Per warehouse of the lock, in order: (warehouse_id, units locked there, its capacity).
    loads: list[tuple[str, int, int]] = field(default_factory=list)

    def locks(self, saga_id: str) -> list[common_pb2.InventoryLock]:
        expires, created = to_timestamp(self.expires_at), to_timestamp(self.now)
        return [
            common_pb2.InventoryLock(
                **fields(line, "warehouse_id sku quantity"),
                lock_id=lock_id,
                saga_id=saga_id,
                status=common_pb2.LOCK_STATUS_HELD,
                expires_at=expires,
                created_at=created,
            )
            for lock_id, line in zip(self.lock_ids, self.lines)
        ]


def plan_lock(inp: pb.LockInventoryInput, now: datetime, ttl_seconds: float, lock_ids: Sequence[str]) -> LockPlan:
    requested = from_timestamp(inp.expires_at) if inp.HasField("expires_at") else None
    if requested is not None and requested <= now:
        raise InvalidArgument(
            "the lock would expire before it is taken",
            violations=[("lock_inventory.expires_at", "must be in the future")],
        )
    lines = ordered_lines(inp.lines)
    return LockPlan(
        now=now,
        expires_at=lock_expires_at(now, requested, ttl_seconds),
        lines=lines,
        # Lines naming the same stock row are summed, which refuses exactly what locking
        # them one by one would.
        wanted=units_per_stock_row(lines),
        lock_ids=list(lock_ids),
        loads=warehouse_loads(lines, inp.capacities),
    )


# A warehouse the request names no capacity for (a coordinator from before capacities were
# sent) is not limited where it is locked, only where it was planned. 2^62 leaves room to add
# any lock's units to it in a BIGINT.
UNLIMITED = 2**62


def warehouse_loads(
    lines: Sequence[common_pb2.AllocationLine], capacities: Mapping[str, int]
) -> list[tuple[str, int, int]]:
    """(warehouse_id, units, capacity) per warehouse of the lock, by warehouse id (the order the
    store takes the warehouses' load rows in). Capacity means what it means to the allocation
    service: the units a warehouse may hold locked at once, 0 meaning none."""
    units = totals((line.warehouse_id, line.quantity) for line in lines)
    return [(w, units[w], capacities[w] if w in capacities else UNLIMITED) for w in sorted(units)]


def adjustment_refusal(on_hand: int, locked: int, delta: int) -> str | None:
    """Why on_hand + delta is not allowed, or None when it is."""
    after = on_hand + delta
    if after < 0:
        return "NEGATIVE_STOCK"
    if after < locked:
        return "STOCK_BELOW_LOCKED"
    return None


@dataclass(frozen=True)
class LockedUnits:
    lock_id: str
    saga_id: str
    order_id: str
    warehouse_id: str
    sku: str
    quantity: int


def units_per_stock_row(locks: Iterable[LockedUnits | common_pb2.AllocationLine]) -> list[tuple[str, str, int]]:
    """(warehouse, SKU, units) to take or give back, one per stock row, in the rows' lock order."""
    units = totals(((lock.warehouse_id, lock.sku), lock.quantity) for lock in locks)
    return [(w, s, q) for (w, s), q in sorted(units.items())]


def short_line(lines: Sequence[common_pb2.AllocationLine], available: int) -> tuple[common_pb2.AllocationLine, int]:
    """The line that does not fit when one stock row's ``lines`` are locked one after another
    from ``available`` units, with the units left for it: what the lock conflict reports.

    The stock row is updated once for all its lines, so this replays them to name the line
    that ran short, as locking line by line would have. When they all fit (the row changed
    since the update refused them) the first line is named with every unit available.
    """
    left = available
    for line in lines:
        if line.quantity > left:
            return line, left
        left -= line.quantity
    return lines[0], available
