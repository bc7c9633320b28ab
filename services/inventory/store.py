"""All of the inventory's SQL: stock, locks, the adjustment journal and the two steps' effects.

Every stock change is one conditional UPDATE whose WHERE clause states the rule it must keep
(``on_hand - locked >= units`` and friends), so concurrent requests cannot oversell even
without the CHECK constraints that back it up in the database. Every statement takes rows in
one order: a saga's locks in lock_id order, then the warehouses' load rows (their locked
units, against which capacity is enforced) in warehouse order, then stock rows in (warehouse,
SKU) order, so concurrent sagas and releases may wait on one another but never deadlock,
statement against statement. (Locks the statement pipe sends together share a transaction and
can; see _GATE and _again_after_deadlock.)
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import psycopg

from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2 as pb
from invsaga.runtime import metrics
from invsaga.runtime.barrier import COMPENSATE, EXECUTE, Barrier, Effect, Reader, Refused
from invsaga.runtime.convert import from_timestamp, to_timestamp, utcnow
from invsaga.runtime.db import Database
from invsaga.runtime.errors import Aborted, FailedPrecondition, NotFound
from services.inventory import logic, transfer_rules
from services.inventory.logic import CONSUMED, EXPIRED, HELD, RELEASED
from services.inventory.transfer_rules import CANCELLED, EXPECTED, IN_TRANSIT

log = logging.getLogger("invsaga.inventory")

# LockInventory statements an Execute tries when the stock it found short is there again by
# the time it looks (released in between).
LOCK_ATTEMPTS = 3

# What a stock UPDATE does with the units of each row it claims.
TAKE = "locked = stock.locked + claimed.units"
GIVE_BACK = "locked = stock.locked - claimed.units"
CONSUME = "locked = stock.locked - claimed.units, on_hand = stock.on_hand - claimed.units"

# CheckAvailability in one read: the stock rows of the requested SKUs in the candidate
# warehouses, then one row per warehouse (sku NULL) with the units locked over all its SKUs,
# the allocation step's load figure.
_AVAILABILITY = (
    "SELECT warehouse_id, sku, product_id, on_hand, locked, bin FROM stock"
    " WHERE warehouse_id = ANY(%(warehouse_ids)s::text[]) AND sku = ANY(%(skus)s::text[])"
    " UNION ALL"
    " SELECT warehouse_id, NULL, NULL, NULL, CAST(sum(locked) AS bigint), NULL FROM stock"
    " WHERE warehouse_id = ANY(%(warehouse_ids)s::text[]) GROUP BY warehouse_id"
)
_AVAILABLE_ROWS = (
    "SELECT warehouse_id, sku, on_hand - locked FROM stock"
    " WHERE (warehouse_id, sku) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
)
# LockInventory's barrier row is written only where every stock row was taken and every
# warehouse had the capacity; otherwise the barrier refuses the whole statement, the rows
# taken included.
_ALL_TAKEN = "(SELECT count(*) FROM took) = %(wanted_rows)s AND (SELECT count(*) FROM room) = %(load_rows)s"
# A lock, release or consumption first takes the load rows of the warehouses it touches (in
# warehouse order), then their stock rows: everything that moves a warehouse's locked units
# waits for its load row before any of its stock rows. That makes a group of locks the
# statement pipe sends in one transaction safe too, as long as they are at one warehouse
# (one statement after another, such a group holds the rows of the first while it waits for
# those of the next; a release that holds stock rows of the warehouse holds its load row, which
# the group already has). Counting ``gate`` in the stock UPDATE's WHERE (a one-time filter,
# evaluated before the UPDATE reads a row) makes PostgreSQL run it to its end first.
_GATE = (
    "gate AS (SELECT warehouse_id FROM warehouse_load WHERE warehouse_id = ANY(%(load_warehouses)s::text[])"
    " ORDER BY warehouse_id FOR UPDATE)"
)
_AFTER_GATE = " AND (SELECT count(*) FROM gate) >= 0"
# The units per warehouse: taken against its capacity by the lock, once every stock row was
# (ON CONFLICT DO UPDATE sees the latest committed row, so two concurrent locks cannot both fit
# in the same room; a warehouse's first lock inserts its row), given back by a release or a
# consumption, once every stock row was (a count runs the stock CTE to its end; an EXISTS would
# stop at its first row).
_TAKE_LOAD = (
    "room AS (INSERT INTO warehouse_load AS l (warehouse_id, locked, capacity)"
    " SELECT w, u, c FROM unnest(%(load_warehouses)s::text[], %(load_units)s::bigint[], %(load_caps)s::bigint[])"
    " AS x(w, u, c) WHERE u <= c AND (SELECT count(*) FROM took) = %(wanted_rows)s ORDER BY w"
    " ON CONFLICT (warehouse_id) DO UPDATE SET locked = l.locked + EXCLUDED.locked, capacity = EXCLUDED.capacity"
    " WHERE l.locked + EXCLUDED.locked <= EXCLUDED.capacity RETURNING l.warehouse_id)"
)
_GIVE_BACK_LOAD = (
    "load_back AS (UPDATE warehouse_load AS l SET locked = l.locked - given.u"
    " FROM unnest(%(load_warehouses)s::text[], %(load_units)s::bigint[]) AS given(w, u)"
    " WHERE l.warehouse_id = given.w AND (SELECT count(*) FROM stock_back) > 0)"
)
_LOADS = "SELECT warehouse_id, locked, capacity FROM warehouse_load WHERE warehouse_id = ANY(%s::text[])"

_SELECTOR = "saga_id = %(saga_id)s AND (%(warehouse_id)s = '' OR warehouse_id = %(warehouse_id)s)"
_UNITS = "SELECT lock_id, saga_id, order_id, warehouse_id, sku, quantity FROM locks WHERE"
_HELD = f"{_UNITS} status = 'held' AND {_SELECTOR} ORDER BY lock_id FOR UPDATE"
_FINISH = (
    "finished AS (UPDATE locks SET status = %(status)s, updated_at = %(now)s,"
    " notify_pending = notify_pending OR %(notify)s WHERE lock_id = ANY(%(lock_ids)s::text[]))"
)
_LOCKS = "SELECT * FROM locks WHERE {} ORDER BY created_at, lock_id"
_SAGA_LOCKS = _LOCKS.format(_SELECTOR)
_HOLD = f"UPDATE locks SET picking = true, updated_at = %(now)s WHERE {_SELECTOR} AND status = 'held' AND NOT picking"

_STOCK = "SELECT * FROM stock WHERE warehouse_id = %(warehouse_id)s AND sku = %(sku)s"
# Every operator change of on_hand goes to the journal in the statement that makes it.
_JOURNAL = (
    "journal AS (INSERT INTO adjustments (warehouse_id, sku, delta, on_hand_after, reason, created_at)"
    " SELECT warehouse_id, sku, %(delta)s, on_hand, %(reason)s, %(now)s FROM written) SELECT * FROM written"
)
_SET_STOCK = (
    "WITH written AS (INSERT INTO stock (warehouse_id, sku, product_id, on_hand, locked, bin, updated_at)"
    " VALUES (%(warehouse_id)s, %(sku)s, %(product_id)s, %(on_hand)s, 0, %(bin)s, %(now)s)"
    " ON CONFLICT (warehouse_id, sku) DO UPDATE SET on_hand = excluded.on_hand, updated_at = excluded.updated_at,"
    # An empty product_id or bin keeps the stored one: setting a count does not erase the bin.
    " product_id = COALESCE(NULLIF(excluded.product_id, ''), stock.product_id),"
    " bin = COALESCE(NULLIF(excluded.bin, ''), stock.bin)"
    # No row back: it appeared, with locks, since it was read.
    f" WHERE stock.locked <= excluded.on_hand RETURNING *), {_JOURNAL}"
)
_ADJUST_STOCK = (
    "WITH written AS (UPDATE stock SET on_hand = on_hand + %(delta)s, updated_at = %(now)s"
    " WHERE warehouse_id = %(warehouse_id)s AND sku = %(sku)s"
    f" AND on_hand + %(delta)s >= locked AND on_hand + %(delta)s >= 0 RETURNING *), {_JOURNAL}"
)

# Transfers (SPEC §10). The expectation: the destination's stock rows (made if missing) count
# the units as incoming, and one line per SKU records them, EXPECTED (IN_TRANSIT if the source's
# picklist completed first).
_EXPECT = (
    "incoming_rows AS (INSERT INTO stock AS s (warehouse_id, sku, product_id, on_hand, locked, bin, incoming,"
    " updated_at) SELECT %(to_warehouse)s, x.sku, x.product_id, 0, 0, '', x.q, %(now)s"
    " FROM unnest(%(skus)s::text[], %(product_ids)s::text[], %(quantities)s::bigint[]) AS x(sku, product_id, q)"
    " ORDER BY x.sku ON CONFLICT (warehouse_id, sku) DO UPDATE SET incoming = s.incoming + EXCLUDED.incoming,"
    " updated_at = EXCLUDED.updated_at),"
    " new_lines AS (INSERT INTO transfer_lines (transfer_id, sku, from_warehouse, to_warehouse, quantity, received,"
    " status, expected_arrival, created_at, updated_at) SELECT %(transfer_id)s, x.sku, %(from_warehouse)s,"
    " %(to_warehouse)s, x.q, 0, %(status)s, %(expected_arrival)s, %(now)s, %(now)s"
    " FROM unnest(%(skus)s::text[], %(quantities)s::bigint[]) AS x(sku, q))"
)
_DESTINATION_ROWS = (
    "SELECT * FROM stock WHERE warehouse_id = %(to_warehouse)s AND sku = ANY(%(skus)s::text[]) ORDER BY sku"
)
_SHIPPED_ALREADY = "SELECT count(*) AS n FROM locks WHERE saga_id = %(saga_id)s AND status = 'consumed'"
# A transfer's EXPECTED lines dropped (its saga rolled back, or its picklist was cancelled
# before it left): the destination no longer counts them as incoming.
_DROP_EXPECTED = (
    f"dropped AS (UPDATE transfer_lines SET status = '{CANCELLED}', updated_at = %(now)s"
    f" WHERE transfer_id = %(saga_id)s AND status = '{EXPECTED}' RETURNING to_warehouse, sku, quantity),"
    " not_incoming AS (UPDATE stock SET incoming = stock.incoming - dropped.quantity, updated_at = %(now)s"
    " FROM dropped WHERE stock.warehouse_id = dropped.to_warehouse AND stock.sku = dropped.sku)"
)
_EXPECTED_LINES = (
    f"SELECT sku FROM transfer_lines WHERE transfer_id = %(saga_id)s AND status = '{EXPECTED}' ORDER BY sku FOR UPDATE"
)
# The outbound picklist completed, consuming the source's locks: the lines are on the road,
# in the same transaction as the stock that left.
_SHIPPED = (
    f"UPDATE transfer_lines SET status = '{IN_TRANSIT}', updated_at = %(now)s"
    f" WHERE transfer_id = %(saga_id)s AND status = '{EXPECTED}'"
    " AND (%(warehouse_id)s = '' OR from_warehouse = %(warehouse_id)s)"
)
_TRANSFER_LINES = "SELECT * FROM transfer_lines WHERE transfer_id = %s ORDER BY sku"
_RECEIVE = (
    "WITH booked AS (UPDATE transfer_lines AS t SET received = x.r, updated_at = %(now)s,"
    " status = CASE WHEN x.r = t.quantity THEN 'received' ELSE 'received_short' END"
    " FROM unnest(%(skus)s::text[], %(received)s::bigint[]) AS x(sku, r)"
    " WHERE t.transfer_id = %(transfer_id)s AND t.sku = x.sku RETURNING t.to_warehouse, t.sku, t.quantity, x.r)"
    " UPDATE stock SET on_hand = stock.on_hand + booked.r, incoming = stock.incoming - booked.quantity,"
    " updated_at = %(now)s FROM booked WHERE stock.warehouse_id = booked.to_warehouse AND stock.sku = booked.sku"
)


@functools.cache
def _stock_change(rows: int, change: str) -> str:
    """One UPDATE of ``rows`` distinct stock rows (parameters ``w<i>``, ``s<i>``, ``q<i>``).

    It runs after ``gate`` (see _GATE), which the statement must define. A sub-select first
    locks the rows in (warehouse, SKU) order, so the order holds whatever join order the
    planner picks for the UPDATE. TAKE is the SPEC's conditional UPDATE for every row at once:
    a row without the units is left alone and missing from what the statement returns. The
    rows are a VALUES list, one text per number of rows, rather than arrays: the planner
    cannot see an array's length, so its generic plan for the prepared statement (hash joins
    over scans of all the stock) is never chosen and PostgreSQL plans the UPDATE afresh on
    every call, which costs it more than running it (measured: 0.15 ms of its CPU per lock).
    With the rows in sight the generic plan is the index plan.
    """
    values = ", ".join(f"(%(w{i})s, %(s{i})s, %(q{i})s::bigint)" for i in range(rows))
    short = " AND stock.on_hand - stock.locked >= claimed.units" if change == TAKE else ""
    return (
        f"UPDATE stock SET {change}, updated_at = %(now)s"
        " FROM (SELECT held.warehouse_id, held.sku, wanted.units"
        f" FROM stock AS held JOIN (VALUES {values}) AS wanted(warehouse_id, sku, units)"
        " ON held.warehouse_id = wanted.warehouse_id AND held.sku = wanted.sku"
        " ORDER BY held.warehouse_id, held.sku FOR UPDATE OF held) AS claimed"
        " WHERE stock.warehouse_id = claimed.warehouse_id AND stock.sku = claimed.sku"
        f"{short}{_AFTER_GATE} RETURNING stock.warehouse_id"
    )


def _stock_params(units: Sequence[tuple[str, str, int]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for i, (warehouse_id, sku, quantity) in enumerate(units):
        params[f"w{i}"], params[f"s{i}"], params[f"q{i}"] = warehouse_id, sku, quantity
    return params


@functools.cache
def _lock_writes(rows: int) -> str:
    """LockInventory as CTEs of its barrier row's statement: ``gate`` waits for the
    warehouses' load rows, ``took`` takes the stock, one conditional UPDATE, ``room`` the
    units against each warehouse's capacity (see _ALL_TAKEN), and ``new_locks`` inserts the
    lock rows."""
    return (
        f"{_GATE}, took AS ({_stock_change(rows, TAKE)}), {_TAKE_LOAD},"
        " new_locks AS (INSERT INTO locks (lock_id, saga_id, order_id, allocation_id,"
        " warehouse_id, sku, quantity, status, expires_at, picking, notify_pending, created_at,"
        " updated_at)"
        " SELECT line.lock_id, %(saga_id)s, %(order_id)s, %(allocation_id)s, line.warehouse_id,"
        " line.sku, line.quantity, 'held', %(expires_at)s, false, false, %(now)s, %(now)s"
        " FROM unnest(%(lock_ids)s::text[], %(warehouse_ids)s::text[], %(skus)s::text[],"
        " %(quantities)s::bigint[]) AS line(lock_id, warehouse_id, sku, quantity))"
    )


def _lock_params(ctx: common_pb2.StepContext, inp: pb.LockInventoryInput, plan: logic.LockPlan) -> dict[str, Any]:
    return {
        **_stock_params(plan.wanted),
        "now": plan.now,
        "wanted_rows": len(plan.wanted),
        "saga_id": ctx.saga_id,
        "order_id": inp.order_id,
        "allocation_id": inp.allocation_id,
        "expires_at": plan.expires_at,
        "lock_ids": plan.lock_ids,
        "warehouse_ids": [line.warehouse_id for line in plan.lines],
        "skus": [line.sku for line in plan.lines],
        "quantities": [line.quantity for line in plan.lines],
        "load_rows": len(plan.loads),
        "load_warehouses": [w for w, _, _ in plan.loads],
        "load_units": [u for _, u, _ in plan.loads],
        "load_caps": [c for _, _, c in plan.loads],
    }


Fetch = Callable[[str, Any], Awaitable[list[Any]]]
T = TypeVar("T")

# Locks go through the statement pipe, which may send several in one transaction
# (invsaga.runtime.pipe). Such a group takes each statement's rows in order, but one statement
# after the other: with locks at two warehouses it may hold the second's load row while it
# waits for the first's, which a release, or a lock over both warehouses, holds while it waits
# for the second's (so also a warehouse's very first locks, before it has a load row to wait
# for). PostgreSQL breaks the cycle by failing one side. The pipe sends a failed group's
# statements again one by one; a lock, release, consumption or compensation that failed is
# tried again from the start: its transaction rolled back whole, it reads what it finishes
# afresh, and the barrier answers a lock or compensation that did commit meanwhile.
DEADLOCK_ATTEMPTS = 5


async def _again_after_deadlock(what: str, transaction: Callable[[], Awaitable[T]]) -> T:
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        try:
            return await transaction()
        except psycopg.errors.DeadlockDetected:
            if attempt == DEADLOCK_ATTEMPTS:
                raise  # UNAVAILABLE to the caller, who may try again later
            log.warning("deadlock on stock or load rows in %s (attempt %d), trying again", what, attempt)
    raise AssertionError("unreachable")


async def _finish(fetch: Fetch, held_sql: str, params: dict, status: str, now: datetime):
    """Claim held locks (``held_sql`` locks them, in lock_id order) and the writes that move
    them to ``status`` and give their units back (or consume them): (locks, writes, params)."""
    held = [logic.LockedUnits(*row) for row in await fetch(held_sql, params)]
    if not held:
        return held, "", {}
    units = logic.units_per_stock_row(held)
    change = CONSUME if status == CONSUMED else GIVE_BACK
    writes = f"{_FINISH}, {_GATE}, stock_back AS ({_stock_change(len(units), change)}), {_GIVE_BACK_LOAD}"
    per_warehouse: dict[str, int] = {}
    for lock in held:
        per_warehouse[lock.warehouse_id] = per_warehouse.get(lock.warehouse_id, 0) + lock.quantity
    return (
        held,
        writes,
        {
            **_stock_params(units),
            "load_warehouses": list(per_warehouse),
            "load_units": list(per_warehouse.values()),
            "status": status,
            "now": now,
            "notify": status == EXPIRED,
            "lock_ids": [lock.lock_id for lock in held],
        },
    )


def _stock_proto(row) -> common_pb2.StockLevel:
    return common_pb2.StockLevel(
        warehouse_id=row.warehouse_id,
        sku=row.sku,
        product_id=row.product_id,
        on_hand=row.on_hand,
        locked=row.locked,
        available=row.on_hand - row.locked,
        bin=row.bin,
        incoming=getattr(row, "incoming", 0),
    )


def _transfer_line_proto(row) -> common_pb2.TransferLine:
    short = row.status == transfer_rules.RECEIVED_SHORT
    return common_pb2.TransferLine(
        transfer_id=row.transfer_id,
        sku=row.sku,
        from_warehouse=row.from_warehouse,
        to_warehouse=row.to_warehouse,
        quantity=row.quantity,
        received=row.received,
        status=transfer_rules.LINE_STATUS_FROM_DB[row.status],
        expected_arrival=to_timestamp(row.expected_arrival),
        updated_at=to_timestamp(row.updated_at),
        missing=row.quantity - row.received if short else 0,
    )


def _lock_proto(row) -> common_pb2.InventoryLock:
    return common_pb2.InventoryLock(
        lock_id=row.lock_id,
        saga_id=row.saga_id,
        warehouse_id=row.warehouse_id,
        sku=row.sku,
        quantity=row.quantity,
        status=logic.LOCK_STATUS_FROM_DB[row.status],
        expires_at=to_timestamp(row.expires_at),
        picking=row.picking,
        created_at=to_timestamp(row.created_at),
    )


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


class InventoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.barrier = Barrier(db, pb.ExecuteResponse, pb.CompensateResponse)

    # -- the saga steps ---------------------------------------------------------------------

    async def check_availability(
        self, ctx: common_pb2.StepContext, inp: pb.CheckAvailabilityInput
    ) -> pb.ExecuteResponse:
        """Read in autocommit; the barrier row keeps the answer for duplicates."""

        async def effect(reader: Reader) -> Effect:
            warehouse_ids = list(dict.fromkeys(inp.warehouse_ids))
            stock: list[common_pb2.StockLevel] = []
            locked: dict[str, int] = {}
            if warehouse_ids:
                params = {"warehouse_ids": warehouse_ids, "skus": list(logic.required_by_sku(inp.items))}
                for row in await reader.fetch(_AVAILABILITY, params):
                    if row.sku is None:
                        locked[row.warehouse_id] = row.locked
                    else:
                        stock.append(_stock_proto(row))
            output = logic.summarize_availability(inp.items, warehouse_ids, stock, locked)
            return Effect(pb.ExecuteResponse(check_availability=output))

        return await self.barrier.run(ctx, EXECUTE, effect)

    async def lock(
        self, ctx: common_pb2.StepContext, inp: pb.LockInventoryInput, lock_ttl: float
    ) -> pb.ExecuteResponse:
        """The stock UPDATE, the warehouses' load, the lock rows and the barrier row in one
        statement.

        A short stock row or a warehouse without the room refuses the statement (_ALL_TAKEN),
        which writes nothing. The loads and then the rows are read again to say why: a full
        warehouse is CAPACITY_EXCEEDED, a short row a LOCK_CONFLICT naming the line that does
        not fit (both ABORTED: the coordinator retries them, as a release may make room). If
        everything fits by then (released in between), the lock is tried again.
        """
        plans: list[logic.LockPlan] = []

        async def effect(reader: Reader) -> Effect:
            # Planned inside the barrier's call: a repeat that no longer validates (its expiry
            # has passed) still gets the stored answer of the lock taken the first time.
            if not plans:
                plans.append(logic.plan_lock(inp, utcnow(), lock_ttl, [uuid.uuid4().hex for _ in inp.lines]))
            plan = plans[0]
            response = pb.ExecuteResponse(lock_inventory=pb.LockInventoryOutput(locks=plan.locks(ctx.saga_id)))
            return Effect(response, _lock_writes(len(plan.wanted)), _lock_params(ctx, inp, plan), _ALL_TAKEN)

        for attempt in range(LOCK_ATTEMPTS):
            try:
                return await _again_after_deadlock("a lock", lambda: self.barrier.run(ctx, EXECUTE, effect))
            except Refused:  # some stock row was short, or some warehouse full
                plan = plans[0]
                loads = {r.warehouse_id: r for r in await self.db.fetch(_LOADS, ([w for w, _, _ in plan.loads],))}
                for warehouse_id, units, capacity in plan.loads:
                    found = loads.get(warehouse_id)
                    locked = found.locked if found is not None else 0
                    if locked + units > capacity:
                        raise CapacityExceeded(warehouse_id, capacity, locked, units) from None
                keys = ([w for w, _, _ in plan.wanted], [s for _, s, _ in plan.wanted])
                rows = await self.db.fetch(_AVAILABLE_ROWS, keys)
                available = {(w, s): units for w, s, units in rows}
                short = [(w, s) for w, s, units in plan.wanted if available.get((w, s), 0) < units]
                if short or attempt == LOCK_ATTEMPTS - 1:
                    warehouse_id, sku = short[0] if short else plan.wanted[0][:2]
                    metrics.LOCK_FAILURES.labels(warehouse_id).inc()
                    raise LockConflict(plan.lines, warehouse_id, sku, available.get((warehouse_id, sku), 0)) from None
        raise AssertionError("unreachable")

    async def expect_transfer(self, ctx: common_pb2.StepContext, inp: pb.ExpectTransferInput) -> pb.ExecuteResponse:
        """The transfer's units become incoming at the destination, with one line per SKU."""
        skus = [item.sku for item in inp.items]
        params: dict[str, Any] = {
            "saga_id": ctx.saga_id,
            "transfer_id": ctx.saga_id,
            "from_warehouse": inp.from_warehouse,
            "to_warehouse": inp.to_warehouse,
            "skus": skus,
            "product_ids": [item.product_id for item in inp.items],
            "quantities": [item.quantity for item in inp.items],
            "expected_arrival": from_timestamp(inp.expected_arrival) if inp.HasField("expected_arrival") else None,
        }

        async def effect(reader: Reader) -> Effect:
            params["now"] = utcnow()
            shipped = (await reader.fetch(_SHIPPED_ALREADY, params))[0].n > 0
            params["status"] = IN_TRANSIT if shipped else EXPECTED
            rows = {row.sku: _stock_proto(row) for row in await reader.fetch(_DESTINATION_ROWS, params)}
            destination = []
            for item in inp.items:
                level = rows.get(item.sku) or common_pb2.StockLevel(
                    warehouse_id=inp.to_warehouse, sku=item.sku, product_id=item.product_id
                )
                level.incoming += item.quantity
                destination.append(level)
            response = pb.ExecuteResponse(expect_transfer=pb.ExpectTransferOutput(destination=destination))
            return Effect(response, _EXPECT, params)

        return await _again_after_deadlock("an expectation", lambda: self.barrier.run(ctx, EXECUTE, effect))

    async def compensate(self, ctx: common_pb2.StepContext) -> pb.CompensateResponse:
        """Release the saga's held locks, or drop its transfer's expectation; an availability
        check has nothing to undo."""

        async def effect(reader: Reader) -> Effect:
            if ctx.step == common_pb2.SAGA_STEP_EXPECT_TRANSFER:
                params = {"saga_id": ctx.saga_id, "now": utcnow()}
                if not await reader.fetch(_EXPECTED_LINES, params):
                    return Effect(pb.CompensateResponse())
                return Effect(pb.CompensateResponse(), _DROP_EXPECTED, params)
            if ctx.step != common_pb2.SAGA_STEP_LOCK_INVENTORY:
                return Effect(pb.CompensateResponse())
            params = {"saga_id": ctx.saga_id, "warehouse_id": ""}
            held, writes, params = await _finish(reader.fetch, _HELD, params, RELEASED, utcnow())
            return Effect(pb.CompensateResponse(released_units=sum(lock.quantity for lock in held)), writes, params)

        return await _again_after_deadlock("a compensation", lambda: self.barrier.run(ctx, COMPENSATE, effect))

    # -- picking and release ----------------------------------------------------------------

    @staticmethod
    async def _finish_in(conn, held_sql: str, params: dict, status: str, now: datetime) -> list[logic.LockedUnits]:
        async def fetch(sql: str, args: Any) -> list[Any]:
            return await (await conn.execute(sql, args)).fetchall()

        held, writes, write_params = await _finish(fetch, held_sql, params, status, now)
        if writes:
            await conn.execute(f"WITH {writes} SELECT 1", write_params)
        return held

    @staticmethod
    async def _locks(conn, params: dict) -> list[common_pb2.InventoryLock]:
        return [_lock_proto(row) for row in await (await conn.execute(_SAGA_LOCKS, params)).fetchall()]

    async def _advance(self, saga_id: str, warehouse_id: str, outcome: str, why: str) -> list[common_pb2.InventoryLock]:
        """A picking transition of a saga's locks, refused when no lock ends in ``outcome``.

        Running it again finds the locks already there, so logistics may retry freely.
        """
        params: dict[str, Any] = {"saga_id": saga_id, "warehouse_id": warehouse_id, "now": utcnow()}

        async def advance() -> list[common_pb2.InventoryLock]:
            async with self.db.transaction() as conn:
                if outcome == CONSUMED:
                    await self._finish_in(conn, _HELD, params, CONSUMED, params["now"])
                    await conn.execute(_SHIPPED, params)  # a transfer's units are on the road
                else:
                    await conn.execute(_HOLD, params)
                locks = await self._locks(conn, params)
                if not locks:
                    raise LocksNotFound(saga_id, warehouse_id)
                if not any(lock.status == logic.LOCK_STATUS_FROM_DB[outcome] for lock in locks):
                    raise LocksNotHeld(saga_id, warehouse_id, locks, why)
            return locks

        return await _again_after_deadlock(f"a {outcome} transition", advance)

    async def hold(self, saga_id: str, warehouse_id: str) -> list[common_pb2.InventoryLock]:
        """Picking starts: the locks no longer expire."""
        return await self._advance(saga_id, warehouse_id, HELD, "picking cannot start")

    async def consume(self, saga_id: str, warehouse_id: str) -> list[common_pb2.InventoryLock]:
        """Picking is done: the locked units leave the stock."""
        return await self._advance(saga_id, warehouse_id, CONSUMED, "nothing to consume")

    async def release(self, saga_id: str, warehouse_id: str) -> tuple[int, list[common_pb2.InventoryLock]]:
        """Give the held locks' units back: (locks released, every lock of the selection)."""
        params = {"saga_id": saga_id, "warehouse_id": warehouse_id}

        async def release() -> tuple[int, list[common_pb2.InventoryLock]]:
            async with self.db.transaction() as conn:
                now = utcnow()
                released = await self._finish_in(conn, _HELD, params, RELEASED, now)
                if released:  # a transfer released at its source is no longer expected anywhere
                    await conn.execute(f"WITH {_DROP_EXPECTED} SELECT 1", {"saga_id": saga_id, "now": now})
                return len(released), await self._locks(conn, params)

        return await _again_after_deadlock("a release", release)

    # -- stock and lock admin ---------------------------------------------------------------

    @staticmethod
    async def _stock_row(conn, warehouse_id: str, sku: str, for_update: bool = False):
        """The stock row; a missing one is STOCK_NOT_FOUND, unless it is read to be written."""
        key = {"warehouse_id": warehouse_id, "sku": sku}
        row = await (await conn.execute(_STOCK + (" FOR UPDATE" if for_update else ""), key)).fetchone()
        if row is None and not for_update:
            raise StockNotFound(warehouse_id, sku)
        return row

    @staticmethod
    def _below_locked(row, on_hand: int) -> StockRefused:
        return StockRefused(
            row, f"on_hand {on_hand} would be below the {row.locked} locked units", requested_on_hand=str(on_hand)
        )

    async def set_stock(self, request: pb.SetStockRequest) -> common_pb2.StockLevel:
        key = {"warehouse_id": request.warehouse_id, "sku": request.sku}
        async with self.db.transaction() as conn:
            current = await self._stock_row(conn, **key, for_update=True)
            if current is not None and current.locked > request.on_hand:
                raise self._below_locked(current, request.on_hand)
            delta = request.on_hand - (current.on_hand if current is not None else 0)
            params = {**key, "product_id": request.product_id, "on_hand": request.on_hand, "bin": request.bin}
            params.update(now=utcnow(), reason="set", delta=delta)
            row = await (await conn.execute(_SET_STOCK, params)).fetchone()
            if row is None:
                raise self._below_locked(await self._stock_row(conn, **key), request.on_hand)
        return _stock_proto(row)

    async def adjust_stock(self, request: pb.AdjustStockRequest) -> common_pb2.StockLevel:
        key, delta = {"warehouse_id": request.warehouse_id, "sku": request.sku}, request.delta
        async with self.db.transaction() as conn:
            params = {**key, "delta": delta, "reason": request.reason, "now": utcnow()}
            row = await (await conn.execute(_ADJUST_STOCK, params)).fetchone()
            if row is None:
                current = await self._stock_row(conn, **key)
                reason = logic.adjustment_refusal(current.on_hand, current.locked, delta) or "STOCK_BELOW_LOCKED"
                limit = "zero" if reason == "NEGATIVE_STOCK" else f"the {current.locked} locked units"
                message = f"adjusting on_hand {current.on_hand} by {delta} would leave it below {limit}"
                raise StockRefused(current, message, reason, delta=str(delta))
        return _stock_proto(row)

    async def get_stock(self, warehouse_id: str, sku: str) -> common_pb2.StockLevel:
        async with self.db.connection() as conn:
            return _stock_proto(await self._stock_row(conn, warehouse_id, sku))

    @staticmethod
    def _filters(**filters: str) -> str:
        return " AND ".join([f"{column} = %({column})s" for column, value in filters.items() if value] or ["true"])

    async def list_stock(self, warehouse_id: str, sku: str, offset: int, limit: int) -> list[common_pb2.StockLevel]:
        where = self._filters(warehouse_id=warehouse_id, sku=sku)
        sql = f"SELECT * FROM stock WHERE {where} ORDER BY warehouse_id, sku OFFSET %(offset)s LIMIT %(limit)s"
        params = {"warehouse_id": warehouse_id, "sku": sku, "offset": offset, "limit": limit}
        return [_stock_proto(row) for row in await self.db.fetch(sql, params)]

    async def list_locks(
        self, saga_id: str, warehouse_id: str, status: str, offset: int, limit: int
    ) -> list[common_pb2.InventoryLock]:
        where = self._filters(saga_id=saga_id, warehouse_id=warehouse_id, status=status)
        params = {"saga_id": saga_id, "warehouse_id": warehouse_id, "status": status, "offset": offset, "limit": limit}
        sql = _LOCKS.format(where) + " OFFSET %(offset)s LIMIT %(limit)s"
        return [_lock_proto(row) for row in await self.db.fetch(sql, params)]

    async def utilisation(self) -> list[tuple[str, int, int]]:
        """Units on hand and locked per warehouse (the utilisation gauges)."""
        sql = "SELECT warehouse_id, sum(on_hand) AS on_hand, sum(locked) AS locked FROM stock GROUP BY warehouse_id"
        return await self.db.fetch(sql)

    async def extend(self, saga_id: str, until: datetime) -> int:
        """ExtendLocks: the saga's held locks whose picking has not started expire at ``until``
        (the coordinator alone expires a reservation now); returns how many."""
        sql = (
            "UPDATE locks SET expires_at = %s, updated_at = %s"
            " WHERE saga_id = %s AND status = 'held' AND NOT picking RETURNING lock_id"
        )
        return len(await self.db.fetch(sql, (until, utcnow(), saga_id)))

    # -- transfers --------------------------------------------------------------------------

    async def receive_transfer(self, request: pb.ReceiveTransferRequest) -> list[common_pb2.TransferLine]:
        """Book what arrived: on_hand up by it, incoming down by what was shipped, a short
        line's difference kept as its missing units. Refused whole, writing nothing, when any
        line is wrong; a repeat of the same receipt answers with what was booked."""
        async with self.db.transaction() as conn:
            rows: list[Any] = await (
                await conn.execute(_TRANSFER_LINES + " FOR UPDATE", (request.transfer_id,))
            ).fetchall()
            if not rows:
                raise NotFound(
                    f"no transfer {request.transfer_id!r} at inventory",
                    reason="TRANSFER_NOT_FOUND",
                    metadata={"transfer_id": request.transfer_id},
                )
            stored = [transfer_rules.StoredLine(r.sku, r.quantity, r.received, r.status) for r in rows]
            received = transfer_rules.plan_receipt(request.transfer_id, stored, request.lines)
            if received is not None:
                params = {
                    "transfer_id": request.transfer_id,
                    "skus": list(received),
                    "received": list(received.values()),
                    "now": utcnow(),
                }
                await conn.execute(_RECEIVE, params)
                rows = await (await conn.execute(_TRANSFER_LINES, (request.transfer_id,))).fetchall()
        return [_transfer_line_proto(row) for row in rows]

    async def list_transfers(
        self, transfer_id: str, warehouse_id: str, offset: int, limit: int
    ) -> list[common_pb2.TransferLine]:
        sql = (
            "SELECT * FROM transfer_lines WHERE (%(transfer_id)s = '' OR transfer_id = %(transfer_id)s)"
            " AND (%(warehouse_id)s = '' OR from_warehouse = %(warehouse_id)s OR to_warehouse = %(warehouse_id)s)"
            " ORDER BY created_at, transfer_id, sku OFFSET %(offset)s LIMIT %(limit)s"
        )
        params = {"transfer_id": transfer_id, "warehouse_id": warehouse_id, "offset": offset, "limit": limit}
        return [_transfer_line_proto(row) for row in await self.db.fetch(sql, params)]
