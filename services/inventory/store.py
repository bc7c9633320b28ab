"""The inventory's store: stock, locks, the adjustment journal, transfers and the steps' effects,
as domain operations (``lock``, ``release``, ``receive_transfer``, ...) that raise the domain
errors of services/inventory/errors.py. The SQL they run, and why it cannot oversell or
deadlock, is in services/inventory/statements.py.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import psycopg

from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2 as pb
from invsaga.runtime import metrics
from invsaga.runtime.barrier import COMPENSATE, EXECUTE, Barrier, Effect, Reader, Refused
from invsaga.runtime.convert import from_timestamp, to_timestamp, utcnow
from invsaga.runtime.db import Database
from invsaga.runtime.errors import NotFound
from services.common import fields, matching, totals
from services.inventory import logic, transfer_rules
from services.inventory import statements as sql
from services.inventory.errors import (
    CapacityExceeded,
    LockConflict,
    StockNotFound,
    StockRefused,
    LocksNotFound,
    LocksNotHeld,
)
from services.inventory.logic import CONSUMED, EXPIRED, HELD, RELEASED

log = logging.getLogger("invsaga.inventory")

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


async def _finish(fetch: Fetch, params: dict, status: str, now: datetime):
    """Claim held locks (sql.HELD locks them, in lock_id order) and the writes that move
    them to ``status`` and give their units back (or consume them): (locks, writes, params)."""
    held = [logic.LockedUnits(*row) for row in await fetch(sql.HELD, params)]
    if not held:
        return held, "", {}
    units = logic.units_per_stock_row(held)
    change = sql.CONSUME if status == CONSUMED else sql.GIVE_BACK
    writes = f"{sql.FINISH}, {sql.GATE}, stock_back AS ({sql.stock_change(len(units), change)}), {sql.GIVE_BACK_LOAD}"
    per_warehouse = totals((lock.warehouse_id, lock.quantity) for lock in held)
    return (
        held,
        writes,
        {
            **sql.stock_params(units),
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
        **fields(row, "warehouse_id sku product_id on_hand locked bin"),
        available=row.on_hand - row.locked,
        incoming=getattr(row, "incoming", 0),
    )


def _transfer_line_proto(row) -> common_pb2.TransferLine:
    short = row.status == transfer_rules.RECEIVED_SHORT
    return common_pb2.TransferLine(
        **fields(row, "transfer_id sku from_warehouse to_warehouse quantity received"),
        status=transfer_rules.LINE_STATUS_FROM_DB[row.status],
        expected_arrival=to_timestamp(row.expected_arrival),
        updated_at=to_timestamp(row.updated_at),
        missing=row.quantity - row.received if short else 0,
    )


def _lock_proto(row) -> common_pb2.InventoryLock:
    return common_pb2.InventoryLock(
        **fields(row, "lock_id saga_id warehouse_id sku quantity picking"),
        status=logic.LOCK_STATUS_FROM_DB[row.status],
        expires_at=to_timestamp(row.expires_at),
        created_at=to_timestamp(row.created_at),
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
                for row in await reader.fetch(sql.AVAILABILITY, params):
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

        A short stock row or a warehouse without the room refuses the statement (sql.ALL_TAKEN),
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
            return Effect(response, sql.lock_writes(len(plan.wanted)), sql.lock_params(ctx, inp, plan), sql.ALL_TAKEN)

        for attempt in range(sql.LOCK_ATTEMPTS):
            try:
                return await _again_after_deadlock("a lock", lambda: self.barrier.run(ctx, EXECUTE, effect))
            except Refused:  # some stock row was short, or some warehouse full
                plan = plans[0]
                rows = await self.db.fetch(sql.LOADS, ([w for w, _, _ in plan.loads],))
                loads = {r.warehouse_id: r.locked for r in rows}
                for warehouse_id, units, capacity in plan.loads:
                    locked = loads.get(warehouse_id, 0)
                    if locked + units > capacity:
                        raise CapacityExceeded(warehouse_id, capacity, locked, units) from None
                keys = ([w for w, _, _ in plan.wanted], [s for _, s, _ in plan.wanted])
                rows = await self.db.fetch(sql.AVAILABLE_ROWS, keys)
                available = {(w, s): units for w, s, units in rows}
                short = [(w, s) for w, s, units in plan.wanted if available.get((w, s), 0) < units]
                if short or attempt == sql.LOCK_ATTEMPTS - 1:
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
            **fields(inp, "from_warehouse to_warehouse"),
            "skus": skus,
            "product_ids": [item.product_id for item in inp.items],
            "quantities": [item.quantity for item in inp.items],
            "expected_arrival": from_timestamp(inp.expected_arrival) if inp.HasField("expected_arrival") else None,
        }

        async def effect(reader: Reader) -> Effect:
            params["now"] = utcnow()
            rows = {row.sku: _stock_proto(row) for row in await reader.fetch(sql.DESTINATION_ROWS, params)}
            destination = []
            for item in inp.items:
                level = rows.get(item.sku) or common_pb2.StockLevel(
                    warehouse_id=inp.to_warehouse, sku=item.sku, product_id=item.product_id
                )
                level.incoming += item.quantity
                destination.append(level)
            response = pb.ExecuteResponse(expect_transfer=pb.ExpectTransferOutput(destination=destination))
            return Effect(response, sql.EXPECT, params)

        return await _again_after_deadlock("an expectation", lambda: self.barrier.run(ctx, EXECUTE, effect))

    async def compensate(self, ctx: common_pb2.StepContext) -> pb.CompensateResponse:
        """Release the saga's held locks, or drop its transfer's expectation; an availability
        check has nothing to undo."""

        async def effect(reader: Reader) -> Effect:
            if ctx.step == common_pb2.SAGA_STEP_EXPECT_TRANSFER:
                params = {"saga_id": ctx.saga_id, "now": utcnow()}
                if not await reader.fetch(sql.EXPECTED_LINES, params):
                    return Effect(pb.CompensateResponse())
                return Effect(pb.CompensateResponse(), sql.DROP_EXPECTED, params)
            if ctx.step != common_pb2.SAGA_STEP_LOCK_INVENTORY:
                return Effect(pb.CompensateResponse())
            params = {"saga_id": ctx.saga_id, "warehouse_id": ""}
            held, writes, params = await _finish(reader.fetch, params, RELEASED, utcnow())
            return Effect(pb.CompensateResponse(released_units=sum(lock.quantity for lock in held)), writes, params)

        return await _again_after_deadlock("a compensation", lambda: self.barrier.run(ctx, COMPENSATE, effect))

    # -- picking and release ----------------------------------------------------------------

    async def _finish_in(self, conn, params: dict, status: str, now: datetime) -> list[logic.LockedUnits]:
        held, writes, write_params = await _finish(Reader(self.db, conn).fetch, params, status, now)
        if writes:
            await conn.execute(f"WITH {writes} SELECT 1", write_params)
        return held

    @staticmethod
    async def _locks(conn, params: dict) -> list[common_pb2.InventoryLock]:
        return [_lock_proto(row) for row in await (await conn.execute(sql.SAGA_LOCKS, params)).fetchall()]

    async def _advance(self, saga_id: str, warehouse_id: str, outcome: str, why: str) -> list[common_pb2.InventoryLock]:
        """A picking transition of a saga's locks, refused when no lock ends in ``outcome``.

        Running it again finds the locks already there, so logistics may retry freely.
        """
        params: dict[str, Any] = {"saga_id": saga_id, "warehouse_id": warehouse_id, "now": utcnow()}

        async def advance() -> list[common_pb2.InventoryLock]:
            async with self.db.transaction() as conn:
                if outcome == CONSUMED:
                    await self._finish_in(conn, params, CONSUMED, params["now"])
                    await conn.execute(sql.SHIPPED, params)  # a transfer's units are on the road
                else:
                    await conn.execute(sql.HOLD, params)
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
                released = await self._finish_in(conn, params, RELEASED, now)
                if released:  # a transfer released at its source is no longer expected anywhere
                    await conn.execute(f"WITH {sql.DROP_EXPECTED} SELECT 1", {"saga_id": saga_id, "now": now})
                return len(released), await self._locks(conn, params)

        return await _again_after_deadlock("a release", release)

    # -- stock and lock admin ---------------------------------------------------------------

    @staticmethod
    async def _stock_row(conn, warehouse_id: str, sku: str, for_update: bool = False):
        """The stock row; a missing one is STOCK_NOT_FOUND, unless it is read to be written."""
        key = {"warehouse_id": warehouse_id, "sku": sku}
        row = await (await conn.execute(sql.STOCK + (" FOR UPDATE" if for_update else ""), key)).fetchone()
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
            row = await (await conn.execute(sql.SET_STOCK, params)).fetchone()
            if row is None:
                raise self._below_locked(await self._stock_row(conn, **key), request.on_hand)
        return _stock_proto(row)

    async def adjust_stock(self, request: pb.AdjustStockRequest) -> common_pb2.StockLevel:
        key, delta = {"warehouse_id": request.warehouse_id, "sku": request.sku}, request.delta
        async with self.db.transaction() as conn:
            params = {**key, "delta": delta, "reason": request.reason, "now": utcnow()}
            row = await (await conn.execute(sql.ADJUST_STOCK, params)).fetchone()
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

    async def list_stock(self, warehouse_id: str, sku: str, offset: int, limit: int) -> list[common_pb2.StockLevel]:
        where = matching(warehouse_id=warehouse_id, sku=sku)
        query = f"SELECT * FROM stock WHERE {where} ORDER BY warehouse_id, sku OFFSET %(offset)s LIMIT %(limit)s"
        params = {"warehouse_id": warehouse_id, "sku": sku, "offset": offset, "limit": limit}
        return [_stock_proto(row) for row in await self.db.fetch(query, params)]

    async def list_locks(
        self, saga_id: str, warehouse_id: str, status: str, offset: int, limit: int
    ) -> list[common_pb2.InventoryLock]:
        where = matching(saga_id=saga_id, warehouse_id=warehouse_id, status=status)
        params = {"saga_id": saga_id, "warehouse_id": warehouse_id, "status": status, "offset": offset, "limit": limit}
        query = sql.LOCKS.format(where) + " OFFSET %(offset)s LIMIT %(limit)s"
        return [_lock_proto(row) for row in await self.db.fetch(query, params)]

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
            rows = await Reader(self.db, conn).fetch(sql.TRANSFER_LINES + " FOR UPDATE", (request.transfer_id,))
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
                await conn.execute(sql.RECEIVE, params)
                rows = await (await conn.execute(sql.TRANSFER_LINES, (request.transfer_id,))).fetchall()
        return [_transfer_line_proto(row) for row in rows]

    async def list_transfers(
        self, transfer_id: str, warehouse_id: str, offset: int, limit: int
    ) -> list[common_pb2.TransferLine]:
        query = (
            "SELECT * FROM transfer_lines WHERE (%(transfer_id)s = '' OR transfer_id = %(transfer_id)s)"
            " AND (%(warehouse_id)s = '' OR from_warehouse = %(warehouse_id)s OR to_warehouse = %(warehouse_id)s)"
            " ORDER BY created_at, transfer_id, sku OFFSET %(offset)s LIMIT %(limit)s"
        )
        params = {"transfer_id": transfer_id, "warehouse_id": warehouse_id, "offset": offset, "limit": limit}
        return [_transfer_line_proto(row) for row in await self.db.fetch(query, params)]
