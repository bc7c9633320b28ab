"""gRPC adapters of the inventory service: thin wrappers over logic.py and the tables.

Every stock change is one conditional UPDATE whose WHERE clause states the rule it must keep
(``on_hand - locked >= :q`` and friends), so concurrent requests cannot oversell even without
the CHECK constraints that back it up in the database.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import grpc
import psycopg
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Update,
    bindparam,
    cast,
    false,
    func,
    null,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2_grpc as pb_grpc
from invsaga.notify.v1 import notify_pb2, notify_pb2_grpc
from invsaga.runtime import metrics
from invsaga.runtime.barrier import (
    compensate_once,
    execute_once,
    execute_once_pg_statement,
    is_postgres,
)
from invsaga.runtime.channels import channel_to
from invsaga.runtime.config import Settings
from invsaga.runtime.convert import (
    from_timestamp,
    next_page_token,
    page_window,
    to_timestamp,
    utcnow,
)
from invsaga.runtime.db import open_service_database, raw_pool, upsert
from invsaga.runtime.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Violations,
)
from invsaga.runtime.server import App, registration
from services.inventory import logic, models
from services.inventory.logic import CONSUMED, EXPIRED, HELD, RELEASED

log = logging.getLogger("invsaga.inventory")

S = models.stock
L = models.locks
J = models.adjustments

STEP_INPUTS = {
    common_pb2.SAGA_STEP_CHECK_AVAILABILITY: "check_availability",
    common_pb2.SAGA_STEP_LOCK_INVENTORY: "lock_inventory",
}
SWEEP_BATCH = 500
NOTIFY_TIMEOUT = 5.0

# What a stock UPDATE does with the units of each row (see _stock_update).
TAKE, GIVE_BACK, CONSUME = "take", "give back", "consume"
# Stock rows per UPDATE: SQLite refuses a UNION of more than 500 SELECTs, and this bounds
# the statements _stock_update keeps.
STOCK_BATCH = 100
# LockInventory statements a PostgreSQL Execute tries when the stock it found short is there
# again by the time it looks (released in between).
LOCK_ATTEMPTS = 3

_WAREHOUSE_IDS = bindparam("warehouse_ids", expanding=True)
# CheckAvailability in one statement: the stock rows of the requested SKUs in the candidate
# warehouses, then one row per warehouse (sku NULL) with the units locked over all its SKUs,
# the allocation step's load figure.
_AVAILABILITY = union_all(
    select(
        S.c.warehouse_id, S.c.sku, S.c.product_id, S.c.on_hand, S.c.locked, S.c.bin
    ).where(
        S.c.warehouse_id.in_(_WAREHOUSE_IDS),
        S.c.sku.in_(bindparam("skus", expanding=True)),
    ),
    select(
        S.c.warehouse_id,
        null(),
        null(),
        null(),
        cast(func.sum(S.c.locked), BigInteger),
        null(),
    )
    .where(S.c.warehouse_id.in_(_WAREHOUSE_IDS))
    .group_by(S.c.warehouse_id),
)
# RETURNING makes SQLAlchemy send many rows as one multi-row INSERT instead of one INSERT
# per row; what it returns is not needed.
_INSERT_LOCKS = L.insert().returning(L.c.lock_id)

# Execute's statements on PostgreSQL, sent by psycopg (see _PgSteps): constant texts, which
# psycopg prepares once per connection, with arrays for any number of lines (the stock
# UPDATE takes a VALUES list instead, see _take_pg). First the same as _AVAILABILITY.
_AVAILABILITY_PG = (
    "SELECT warehouse_id, sku, product_id, on_hand, locked, bin FROM stock"
    " WHERE warehouse_id = ANY(%(warehouse_ids)s::text[]) AND sku = ANY(%(skus)s::text[])"
    " UNION ALL"
    " SELECT warehouse_id, NULL, NULL, NULL, CAST(sum(locked) AS bigint), NULL FROM stock"
    " WHERE warehouse_id = ANY(%(warehouse_ids)s::text[]) GROUP BY warehouse_id"
)
_AVAILABLE_ROWS_PG = (
    "SELECT warehouse_id, sku, on_hand - locked FROM stock"
    " WHERE (warehouse_id, sku) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
)
# LockInventory's barrier row is inserted only where every stock row was taken; otherwise the
# guard divides by zero, which aborts the whole statement (the rows taken included).
_ALL_TAKEN_PG = "(SELECT 1 / (count(*) = %(wanted_rows)s)::int FROM took) = 1"


def _stock_proto(row) -> common_pb2.StockLevel:
    return common_pb2.StockLevel(
        warehouse_id=row.warehouse_id,
        sku=row.sku,
        product_id=row.product_id,
        on_hand=row.on_hand,
        locked=row.locked,
        available=row.on_hand - row.locked,
        bin=row.bin,
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


def _locked_units(row) -> logic.LockedUnits:
    return logic.LockedUnits(
        row.lock_id, row.saga_id, row.order_id, row.warehouse_id, row.sku, row.quantity
    )


def _stock_key(warehouse_id: str, sku: str) -> ColumnElement[bool]:
    return (S.c.warehouse_id == warehouse_id) & (S.c.sku == sku)


def _lock_selector(saga_id: str, warehouse_id: str) -> ColumnElement[bool]:
    where = L.c.saga_id == saga_id
    if warehouse_id:
        where = where & (L.c.warehouse_id == warehouse_id)
    return where


async def _get_stock(conn: AsyncConnection, warehouse_id: str, sku: str):
    row = (await conn.execute(select(S).where(_stock_key(warehouse_id, sku)))).first()
    if row is None:
        raise NotFound(
            f"no stock of {sku!r} in warehouse {warehouse_id!r}",
            reason="STOCK_NOT_FOUND",
            metadata={"warehouse_id": warehouse_id, "sku": sku},
        )
    return row


@functools.cache
def _stock_update(rows: int, change: str) -> Update:
    """One UPDATE of ``rows`` distinct stock rows, returning the keys of the rows it changed.

    Parameters: ``w<i>``, ``s<i>``, ``q<i>`` (warehouse, SKU, units) per row and ``now``; see
    _change_stock. A sub-select first locks the rows in (warehouse, SKU) order, the order
    every transaction here takes stock rows in, so concurrent sagas may wait on one another
    but never deadlock, whatever join order the planner picks for the UPDATE. TAKE is the
    SPEC's conditional UPDATE (``on_hand - locked >= :q``) for every row at once: a row
    without the units is left alone and missing from what the statement returns.

    The rows come from a UNION ALL of one-row SELECTs rather than VALUES because SQLAlchemy
    never caches a statement holding VALUES, and compiling it costs more than it saves.
    """
    wanted = union_all(
        *(
            select(
                bindparam(f"w{i}", type_=S.c.warehouse_id.type).label("warehouse_id"),
                bindparam(f"s{i}", type_=S.c.sku.type).label("sku"),
                bindparam(f"q{i}", type_=S.c.locked.type).label("units"),
            )
            for i in range(rows)
        )
    ).subquery("wanted")
    held = S.alias("held")
    claimed = (
        select(held.c.warehouse_id, held.c.sku, wanted.c.units)
        .join_from(
            held,
            wanted,
            (held.c.warehouse_id == wanted.c.warehouse_id)
            & (held.c.sku == wanted.c.sku),
        )
        .order_by(held.c.warehouse_id, held.c.sku)
        .with_for_update(of=held)
        .subquery("claimed")
    )
    units = claimed.c.units
    stmt = update(S).where(
        S.c.warehouse_id == claimed.c.warehouse_id, S.c.sku == claimed.c.sku
    )
    if change == TAKE:
        stmt = stmt.where(S.c.on_hand - S.c.locked >= units).values(
            locked=S.c.locked + units
        )
    elif change == CONSUME:
        stmt = stmt.values(locked=S.c.locked - units, on_hand=S.c.on_hand - units)
    else:
        stmt = stmt.values(locked=S.c.locked - units)
    return stmt.values(
        updated_at=bindparam("now", type_=S.c.updated_at.type)
    ).returning(S.c.warehouse_id, S.c.sku)


@functools.cache
def _lock_ctes_pg(rows: int) -> str:
    """LockInventory on PostgreSQL as CTEs of the barrier row's INSERT (see _ALL_TAKEN_PG).

    ``took`` is _stock_update(rows, TAKE): one conditional UPDATE of the stock rows, locked in
    order. Its rows are a VALUES list, one text per number of rows, rather than arrays: the
    planner cannot see an array's length, so its generic plan for the prepared statement (hash
    joins over scans of all the stock) is never chosen and PostgreSQL plans the UPDATE afresh
    on every call, which costs it more than running it (measured: 0.15 ms of its CPU per
    lock). With the rows in sight the generic plan is the index plan, made once per count.
    ``new_locks`` inserts the lock rows.
    """
    values = ", ".join(f"(%(w{i})s, %(s{i})s, %(q{i})s::bigint)" for i in range(rows))
    return (
        "took AS (UPDATE stock SET locked = stock.locked + claimed.units, updated_at = %(now)s"
        " FROM (SELECT held.warehouse_id, held.sku, wanted.units"
        f" FROM stock AS held JOIN (VALUES {values}) AS wanted(warehouse_id, sku, units)"
        " ON held.warehouse_id = wanted.warehouse_id AND held.sku = wanted.sku"
        " ORDER BY held.warehouse_id, held.sku FOR UPDATE OF held) AS claimed"
        " WHERE stock.warehouse_id = claimed.warehouse_id AND stock.sku = claimed.sku"
        " AND stock.on_hand - stock.locked >= claimed.units"
        " RETURNING stock.warehouse_id),"
        " new_locks AS (INSERT INTO locks (lock_id, saga_id, order_id, allocation_id,"
        " warehouse_id, sku, quantity, status, expires_at, picking, notify_pending, created_at,"
        " updated_at)"
        " SELECT line.lock_id, %(saga_id)s, %(order_id)s, %(allocation_id)s, line.warehouse_id,"
        " line.sku, line.quantity, 'held', %(expires_at)s, false, false, %(now)s, %(now)s"
        " FROM unnest(%(lock_ids)s::text[], %(warehouse_ids)s::text[], %(skus)s::text[],"
        " %(quantities)s::bigint[]) AS line(lock_id, warehouse_id, sku, quantity))"
    )


async def _change_stock(
    conn: AsyncConnection,
    units: list[tuple[str, str, int]],
    change: str,
    now: datetime,
) -> set[tuple[str, str]]:
    """Apply ``change`` to the stock rows of ``units`` (distinct (warehouse, SKU, units), in
    lock order) with one UPDATE per STOCK_BATCH rows; the keys of the rows it changed."""
    changed: set[tuple[str, str]] = set()
    for start in range(0, len(units), STOCK_BATCH):
        batch = units[start : start + STOCK_BATCH]
        params: dict = {"now": now}
        for i, (warehouse_id, sku, quantity) in enumerate(batch):
            params[f"w{i}"] = warehouse_id
            params[f"s{i}"] = sku
            params[f"q{i}"] = quantity
        rows = await conn.execute(_stock_update(len(batch), change), params)
        changed.update((row.warehouse_id, row.sku) for row in rows)
    return changed


async def _select_locks(
    conn: AsyncConnection, where: ColumnElement[bool]
) -> list[common_pb2.InventoryLock]:
    rows = await conn.execute(
        select(L).where(where).order_by(L.c.created_at, L.c.lock_id)
    )
    return [_lock_proto(r) for r in rows]


async def _finish_locks(
    conn: AsyncConnection,
    where: ColumnElement[bool],
    status: str,
    now: datetime,
    *,
    consume: bool = False,
    limit: int | None = None,
    skip_locked: bool = False,
) -> list[logic.LockedUnits]:
    """Move the held locks matching ``where`` to ``status`` and give their units back.

    The locks are claimed in lock_id order (by a locking sub-select of the UPDATE), then
    the stock rows are updated in (warehouse, SKU) order, the same order LockInventory
    takes them in, so these transactions never deadlock one another. The sweeper skips
    rows a request is finishing right now.
    """
    claim = (
        select(L.c.lock_id)
        .where(where, L.c.status == HELD)
        .order_by(L.c.lock_id)
        .limit(limit)
        .with_for_update(skip_locked=skip_locked)
        .correlate(None)  # a scan of its own, not a reference to the UPDATE's row
    )
    values: dict = {"status": status, "updated_at": now}
    if status == EXPIRED:
        values["notify_pending"] = True
    rows = await conn.execute(
        update(L)
        .where(L.c.lock_id.in_(claim), L.c.status == HELD, where)
        .values(**values)
        .returning(
            L.c.lock_id,
            L.c.saga_id,
            L.c.order_id,
            L.c.warehouse_id,
            L.c.sku,
            L.c.quantity,
        )
    )
    finished = [_locked_units(r) for r in rows]
    if finished:
        await _change_stock(
            conn,
            logic.units_per_stock_row(finished),
            CONSUME if consume else GIVE_BACK,
            now,
        )
    return finished


class _CoreSteps:
    """Execute's statements through SQLAlchemy Core (SQLite). CheckAvailability's read is
    the same on both (rows as tuples), so one piece of code builds its answer; _PgSteps sends
    LockInventory as one statement."""

    @staticmethod
    async def availability(
        conn: AsyncConnection, warehouse_ids: list[str], skus: list[str]
    ):
        return await conn.execute(
            _AVAILABILITY, {"warehouse_ids": warehouse_ids, "skus": skus}
        )

    @staticmethod
    async def take(
        conn: AsyncConnection, wanted: list[tuple[str, str, int]], now: datetime
    ) -> set[tuple[str, str]]:
        return await _change_stock(conn, wanted, TAKE, now)

    @staticmethod
    async def available(
        conn: AsyncConnection, warehouse_id: str, sku: str
    ) -> int | None:
        return await conn.scalar(
            select(S.c.on_hand - S.c.locked).where(_stock_key(warehouse_id, sku))
        )

    @staticmethod
    async def insert_locks(
        conn: AsyncConnection,
        ctx: common_pb2.StepContext,
        inp: pb.LockInventoryInput,
        lines: list[common_pb2.AllocationLine],
        lock_ids: list[str],
        expires_at: datetime,
        now: datetime,
    ) -> None:
        await conn.execute(
            _INSERT_LOCKS,
            [
                {
                    "lock_id": lock_id,
                    "saga_id": ctx.saga_id,
                    "order_id": inp.order_id,
                    "allocation_id": inp.allocation_id,
                    "warehouse_id": line.warehouse_id,
                    "sku": line.sku,
                    "quantity": line.quantity,
                    "status": HELD,
                    "expires_at": expires_at,
                    "picking": False,
                    "notify_pending": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for lock_id, line in zip(lock_ids, lines)
            ],
        )


class _PgSteps:
    """Execute on PostgreSQL, sent by psycopg on an autocommit connection: each step is one
    statement whatever the number of lines (``execute_once_pg_statement``). CheckAvailability
    reads, then writes its barrier row; LockInventory's stock UPDATE and lock rows are CTEs of
    its barrier row's INSERT, refused as a whole when any stock row falls short.
    """

    @staticmethod
    async def availability(conn, warehouse_ids: list[str], skus: list[str]):
        cursor = await conn.execute(
            _AVAILABILITY_PG, {"warehouse_ids": warehouse_ids, "skus": skus}
        )
        return await cursor.fetchall()

    @staticmethod
    def lock_statement(
        ctx: common_pb2.StepContext, inp: pb.LockInventoryInput, plan: _LockPlan
    ) -> tuple[str, dict]:
        """The CTEs (``_lock_ctes_pg``) and parameters that take the stock and write the locks."""
        params: dict = {
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
        }
        for i, (warehouse_id, sku, units) in enumerate(plan.wanted):
            params[f"w{i}"] = warehouse_id
            params[f"s{i}"] = sku
            params[f"q{i}"] = units
        return _lock_ctes_pg(len(plan.wanted)), params

    @staticmethod
    async def available_rows(
        conn, wanted: list[tuple[str, str, int]]
    ) -> dict[tuple[str, str], int]:
        cursor = await conn.execute(
            _AVAILABLE_ROWS_PG, ([w for w, _, _ in wanted], [s for _, s, _ in wanted])
        )
        return {(w, s): available for w, s, available in await cursor.fetchall()}


@dataclass
class _LockPlan:
    """What a LockInventory takes: its lines in lock order, the units per stock row, the ids."""

    now: datetime
    expires_at: datetime
    lines: list[common_pb2.AllocationLine]
    wanted: list[tuple[str, str, int]]
    lock_ids: list[str]

    def locks(self, saga_id: str) -> list[common_pb2.InventoryLock]:
        expires, created = to_timestamp(self.expires_at), to_timestamp(self.now)
        return [
            common_pb2.InventoryLock(
                lock_id=lock_id,
                saga_id=saga_id,
                warehouse_id=line.warehouse_id,
                sku=line.sku,
                quantity=line.quantity,
                status=common_pb2.LOCK_STATUS_HELD,
                expires_at=expires,
                created_at=created,
            )
            for lock_id, line in zip(self.lock_ids, self.lines)
        ]


def _lock_conflict(
    lines: list[common_pb2.AllocationLine], warehouse_id: str, sku: str, available: int
) -> Aborted:
    """LOCK_CONFLICT naming the line of this stock row that did not fit."""
    metrics.LOCK_FAILURES.labels(warehouse_id).inc()
    line, left = logic.short_line(
        [
            line
            for line in lines
            if (line.warehouse_id, line.sku) == (warehouse_id, sku)
        ],
        available,
    )
    return Aborted(
        f"cannot lock {line.quantity} of {sku} in {warehouse_id}: {left} available",
        reason="LOCK_CONFLICT",
        metadata={
            "warehouse_id": warehouse_id,
            "sku": sku,
            "required": str(line.quantity),
            "available": str(left),
        },
    )


class InventoryStepServicer(pb_grpc.InventoryStepServiceServicer):
    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self.lock_ttl = settings.saga.expiry.lock
        self._steps = _PgSteps if is_postgres(engine) else _CoreSteps

    async def Execute(self, request: pb.ExecuteRequest, context) -> pb.ExecuteResponse:
        kind = request.WhichOneof("input")
        if kind is None:
            raise InvalidArgument(
                "Execute needs check_availability or lock_inventory",
                violations=[("input", "check_availability or lock_inventory required")],
            )
        expected = STEP_INPUTS.get(request.context.step)
        if expected is not None and expected != kind:
            raise InvalidArgument(
                f"step {common_pb2.SagaStep.Name(request.context.step)} does not take {kind}",
                violations=[("context.step", f"{kind} belongs to another step")],
            )
        if (
            request.context.step not in STEP_INPUTS
            and request.context.step != common_pb2.SAGA_STEP_UNSPECIFIED
        ):
            raise InvalidArgument(
                "inventory hosts CHECK_AVAILABILITY and LOCK_INVENTORY only",
                violations=[("context.step", "not an inventory step")],
            )
        if kind == "check_availability":
            logic.validate_check_availability(request.check_availability)
            if self._steps is _PgSteps:
                # It only reads: read in autocommit, then keep the answer in the barrier row.

                async def read(conn) -> tuple[pb.ExecuteResponse, str, dict]:
                    output = await self._check(conn, request.check_availability)
                    return pb.ExecuteResponse(check_availability=output), "", {}

                return await execute_once_pg_statement(
                    self.engine, request.context, pb.ExecuteResponse, read, reads=True
                )

            async def effect(conn) -> pb.ExecuteResponse:
                return pb.ExecuteResponse(
                    check_availability=await self._check(
                        conn, request.check_availability
                    )
                )
        else:
            logic.validate_lock_inventory(request.lock_inventory)
            if self._steps is _PgSteps:
                return await self._lock_pg(request.context, request.lock_inventory)

            async def effect(conn) -> pb.ExecuteResponse:
                locks = await self._lock(conn, request.context, request.lock_inventory)
                return pb.ExecuteResponse(
                    lock_inventory=pb.LockInventoryOutput(locks=locks)
                )

        return await execute_once(
            self.engine, models.barrier, request.context, pb.ExecuteResponse, effect
        )

    async def _check(
        self, conn, inp: pb.CheckAvailabilityInput
    ) -> pb.CheckAvailabilityOutput:
        warehouse_ids = list(dict.fromkeys(inp.warehouse_ids))
        stock: list[common_pb2.StockLevel] = []
        locked: dict[str, int] = {}
        if warehouse_ids:
            rows = await self._steps.availability(
                conn, warehouse_ids, list(logic.required_by_sku(inp.items))
            )
            for warehouse_id, sku, product_id, on_hand, units_locked, bin_code in rows:
                if sku is None:
                    locked[warehouse_id] = units_locked
                else:
                    stock.append(
                        common_pb2.StockLevel(
                            warehouse_id=warehouse_id,
                            sku=sku,
                            product_id=product_id,
                            on_hand=on_hand,
                            locked=units_locked,
                            available=on_hand - units_locked,
                            bin=bin_code,
                        )
                    )
        return logic.summarize_availability(inp.items, warehouse_ids, stock, locked)

    def _plan_lock(self, inp: pb.LockInventoryInput) -> _LockPlan:
        now = utcnow()
        requested = (
            from_timestamp(inp.expires_at) if inp.HasField("expires_at") else None
        )
        if requested is not None and requested <= now:
            raise InvalidArgument(
                "the lock would expire before it is taken",
                violations=[("lock_inventory.expires_at", "must be in the future")],
            )
        lines = logic.ordered_lines(inp.lines)
        return _LockPlan(
            now=now,
            expires_at=logic.lock_expires_at(now, requested, self.lock_ttl),
            lines=lines,
            # Lines naming the same stock row are summed, which refuses exactly what locking
            # them one by one would.
            wanted=logic.units_per_stock_row(lines),
            lock_ids=[uuid.uuid4().hex for _ in lines],
        )

    async def _lock(
        self,
        conn,
        ctx: common_pb2.StepContext,
        inp: pb.LockInventoryInput,
    ) -> list[common_pb2.InventoryLock]:
        """SQLite: one conditional UPDATE per STOCK_BATCH stock rows, then the lock rows."""
        plan = self._plan_lock(inp)
        taken = await _CoreSteps.take(conn, plan.wanted, plan.now)
        if len(taken) < len(plan.wanted):
            # Raising rolls back the rows already taken. The short row stays locked by the
            # refused UPDATE until then, so the availability read here is the one it saw.
            warehouse_id, sku, _ = next(
                w for w in plan.wanted if (w[0], w[1]) not in taken
            )
            available = await _CoreSteps.available(conn, warehouse_id, sku)
            raise _lock_conflict(plan.lines, warehouse_id, sku, available or 0)
        await _CoreSteps.insert_locks(
            conn, ctx, inp, plan.lines, plan.lock_ids, plan.expires_at, plan.now
        )
        return plan.locks(ctx.saga_id)

    async def _lock_pg(
        self, ctx: common_pb2.StepContext, inp: pb.LockInventoryInput
    ) -> pb.ExecuteResponse:
        """PostgreSQL: the stock UPDATE, the lock rows and the barrier row in one statement.

        A short stock row aborts the statement (_ALL_TAKEN_PG); the rows are then read again
        to name the line that does not fit. If they all fit by then (stock was released in
        between), the lock is tried again.
        """
        plans: list[_LockPlan] = []

        async def effect(conn) -> tuple[pb.ExecuteResponse, str, dict]:
            # Planned inside the barrier's call: a repeat that no longer validates (its expiry
            # has passed) still gets the stored answer of the lock taken the first time.
            if not plans:
                plans.append(self._plan_lock(inp))
            ctes, params = _PgSteps.lock_statement(ctx, inp, plans[0])
            locks = plans[0].locks(ctx.saga_id)
            return (
                pb.ExecuteResponse(lock_inventory=pb.LockInventoryOutput(locks=locks)),
                ctes,
                params,
            )

        for attempt in range(LOCK_ATTEMPTS):
            try:
                return await execute_once_pg_statement(
                    self.engine, ctx, pb.ExecuteResponse, effect, guard=_ALL_TAKEN_PG
                )
            except psycopg.errors.DivisionByZero:  # some stock row was short
                plan = plans[0]
                pool = await raw_pool(self.engine)
                async with pool.connection() as conn:
                    available = await _PgSteps.available_rows(conn, plan.wanted)
                short = [
                    (warehouse_id, sku)
                    for warehouse_id, sku, units in plan.wanted
                    if available.get((warehouse_id, sku), 0) < units
                ]
                if short or attempt == LOCK_ATTEMPTS - 1:
                    warehouse_id, sku = short[0] if short else plan.wanted[0][:2]
                    raise _lock_conflict(
                        plan.lines,
                        warehouse_id,
                        sku,
                        available.get((warehouse_id, sku), 0),
                    ) from None
        raise AssertionError("unreachable")

    async def Compensate(
        self, request: pb.CompensateRequest, context
    ) -> pb.CompensateResponse:
        ctx = request.context
        if ctx.step not in STEP_INPUTS and ctx.step != common_pb2.SAGA_STEP_UNSPECIFIED:
            raise InvalidArgument(
                "inventory hosts CHECK_AVAILABILITY and LOCK_INVENTORY only",
                violations=[("context.step", "not an inventory step")],
            )

        async def effect(conn: AsyncConnection) -> pb.CompensateResponse:
            if ctx.step != common_pb2.SAGA_STEP_LOCK_INVENTORY:
                return (
                    pb.CompensateResponse()
                )  # an availability check has nothing to undo
            released = await _finish_locks(
                conn, L.c.saga_id == ctx.saga_id, RELEASED, utcnow()
            )
            return pb.CompensateResponse(
                released_units=sum(lock.quantity for lock in released)
            )

        return await compensate_once(
            self.engine,
            models.barrier,
            ctx,
            pb.CompensateResponse,
            effect,
            pb.CompensateResponse(null_compensation=True),
        )


class InventoryServicer(pb_grpc.InventoryServiceServicer):
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def SetStock(
        self, request: pb.SetStockRequest, context
    ) -> pb.SetStockResponse:
        logic.validate_set_stock(request)
        now = utcnow()
        async with self.engine.begin() as conn:
            current = (
                await conn.execute(
                    select(S)
                    .where(_stock_key(request.warehouse_id, request.sku))
                    .with_for_update()
                )
            ).first()
            if current is not None and current.locked > request.on_hand:
                raise self._below_locked(current, request.on_hand)
            stmt = upsert(conn, S).values(
                warehouse_id=request.warehouse_id,
                sku=request.sku,
                product_id=request.product_id,
                on_hand=request.on_hand,
                locked=0,
                bin=request.bin,
                updated_at=now,
            )
            # An empty product_id or bin keeps the stored one: setting a count does not erase the bin.
            changes = {
                "on_hand": stmt.excluded.on_hand,
                "updated_at": stmt.excluded.updated_at,
            }
            if request.product_id:
                changes["product_id"] = stmt.excluded.product_id
            if request.bin:
                changes["bin"] = stmt.excluded.bin
            # RETURNING tells whether the row was written (psycopg reports no rowcount for INSERT).
            row = (
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[S.c.warehouse_id, S.c.sku],
                        set_=changes,
                        where=S.c.locked <= request.on_hand,
                    ).returning(*S.c)
                )
            ).first()
            if row is None:  # the row appeared, with locks, since we looked
                raise self._below_locked(
                    await _get_stock(conn, request.warehouse_id, request.sku),
                    request.on_hand,
                )
            delta = request.on_hand - (current.on_hand if current is not None else 0)
            await self._journal(
                conn,
                request.warehouse_id,
                request.sku,
                delta,
                request.on_hand,
                "set",
                now,
            )
            row = await _get_stock(conn, request.warehouse_id, request.sku)
        return pb.SetStockResponse(stock=_stock_proto(row))

    @staticmethod
    def _below_locked(row, on_hand: int) -> FailedPrecondition:
        return FailedPrecondition(
            f"on_hand {on_hand} would be below the {row.locked} locked units",
            reason="STOCK_BELOW_LOCKED",
            metadata={
                "warehouse_id": row.warehouse_id,
                "sku": row.sku,
                "on_hand": str(row.on_hand),
                "locked": str(row.locked),
                "requested_on_hand": str(on_hand),
            },
        )

    @staticmethod
    async def _journal(
        conn: AsyncConnection,
        warehouse_id: str,
        sku: str,
        delta: int,
        after: int,
        reason: str,
        now: datetime,
    ) -> None:
        await conn.execute(
            J.insert().values(
                warehouse_id=warehouse_id,
                sku=sku,
                delta=delta,
                on_hand_after=after,
                reason=reason,
                created_at=now,
            )
        )

    async def AdjustStock(
        self, request: pb.AdjustStockRequest, context
    ) -> pb.AdjustStockResponse:
        logic.validate_adjust_stock(request)
        now = utcnow()
        delta = request.delta
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(S)
                    .where(
                        _stock_key(request.warehouse_id, request.sku),
                        S.c.on_hand + delta >= S.c.locked,
                        S.c.on_hand + delta >= 0,
                    )
                    .values(on_hand=S.c.on_hand + delta, updated_at=now)
                    .returning(*S.c)
                )
            ).first()
            if row is None:
                current = await _get_stock(conn, request.warehouse_id, request.sku)
                reason = (
                    logic.adjustment_refusal(current.on_hand, current.locked, delta)
                    or "STOCK_BELOW_LOCKED"
                )
                raise FailedPrecondition(
                    f"adjusting on_hand {current.on_hand} by {delta} would leave it below "
                    + (
                        "zero"
                        if reason == "NEGATIVE_STOCK"
                        else f"the {current.locked} locked units"
                    ),
                    reason=reason,
                    metadata={
                        "warehouse_id": current.warehouse_id,
                        "sku": current.sku,
                        "on_hand": str(current.on_hand),
                        "locked": str(current.locked),
                        "delta": str(delta),
                    },
                )
            await self._journal(
                conn, row.warehouse_id, row.sku, delta, row.on_hand, request.reason, now
            )
        return pb.AdjustStockResponse(stock=_stock_proto(row))

    async def GetStock(
        self, request: pb.GetStockRequest, context
    ) -> pb.GetStockResponse:
        v = Violations()
        logic.check_id(v, "warehouse_id", request.warehouse_id)
        logic.check_id(v, "sku", request.sku, limit=logic.MAX_TEXT)
        v.raise_if_any("invalid stock key")
        async with self.engine.connect() as conn:
            row = await _get_stock(conn, request.warehouse_id, request.sku)
        return pb.GetStockResponse(stock=_stock_proto(row))

    async def _page(
        self, query, to_proto, page_size: int, page_token: str
    ) -> tuple[list, str]:
        offset, limit = page_window(page_size, page_token)
        async with self.engine.connect() as conn:
            found = [
                to_proto(r)
                for r in await conn.execute(query.offset(offset).limit(limit))
            ]
        return found, next_page_token(offset, limit, len(found))

    async def ListStock(
        self, request: pb.ListStockRequest, context
    ) -> pb.ListStockResponse:
        query = select(S).order_by(S.c.warehouse_id, S.c.sku)
        if request.warehouse_id:
            query = query.where(S.c.warehouse_id == request.warehouse_id)
        if request.sku:
            query = query.where(S.c.sku == request.sku)
        found, token = await self._page(
            query, _stock_proto, request.page_size, request.page_token
        )
        return pb.ListStockResponse(stock=found, next_page_token=token)

    async def ListLocks(
        self, request: pb.ListLocksRequest, context
    ) -> pb.ListLocksResponse:
        query = select(L).order_by(L.c.created_at, L.c.lock_id)
        if request.saga_id:
            query = query.where(L.c.saga_id == request.saga_id)
        if request.warehouse_id:
            query = query.where(L.c.warehouse_id == request.warehouse_id)
        if request.status:
            if request.status not in logic.LOCK_STATUS_TO_DB:
                raise InvalidArgument(
                    "unknown lock status",
                    violations=[("status", "unknown lock status")],
                )
            query = query.where(L.c.status == logic.LOCK_STATUS_TO_DB[request.status])
        found, token = await self._page(
            query, _lock_proto, request.page_size, request.page_token
        )
        return pb.ListLocksResponse(locks=found, next_page_token=token)

    async def HoldLocks(
        self, request: pb.HoldLocksRequest, context
    ) -> pb.HoldLocksResponse:
        async def hold(conn: AsyncConnection, where: ColumnElement[bool]) -> None:
            await conn.execute(
                update(L)
                .where(where, L.c.status == HELD, L.c.picking == false())
                .values(picking=True, updated_at=utcnow())
            )

        locks = await self._advance(
            request.saga_id, request.warehouse_id, hold, HELD, "picking cannot start"
        )
        return pb.HoldLocksResponse(locks=locks)

    async def CommitLocks(
        self, request: pb.CommitLocksRequest, context
    ) -> pb.CommitLocksResponse:
        async def consume(conn: AsyncConnection, where: ColumnElement[bool]) -> None:
            await _finish_locks(conn, where, CONSUMED, utcnow(), consume=True)

        locks = await self._advance(
            request.saga_id,
            request.warehouse_id,
            consume,
            CONSUMED,
            "nothing to consume",
        )
        return pb.CommitLocksResponse(locks=locks)

    async def _advance(
        self, saga_id: str, warehouse_id: str, change, outcome: str, why: str
    ) -> list[common_pb2.InventoryLock]:
        """Apply a picking transition to a saga's locks; refuse when no lock ends in ``outcome``.

        Running it again finds the locks already there, so logistics may retry freely.
        """
        logic.validate_lock_selector(saga_id, warehouse_id)
        async with self.engine.begin() as conn:
            await change(conn, _lock_selector(saga_id, warehouse_id))
            locks = await self._existing(conn, saga_id, warehouse_id)
            if not any(
                lock.status == logic.LOCK_STATUS_FROM_DB[outcome] for lock in locks
            ):
                raise self._not_held(saga_id, warehouse_id, locks, why)
        return locks

    async def ReleaseLocks(
        self, request: pb.ReleaseLocksRequest, context
    ) -> pb.ReleaseLocksResponse:
        logic.validate_lock_selector(request.saga_id, request.warehouse_id)
        v = Violations()
        logic.check_id(
            v, "reason", request.reason, limit=logic.MAX_TEXT, required=False
        )
        v.raise_if_any("invalid release")
        where = _lock_selector(request.saga_id, request.warehouse_id)
        async with self.engine.begin() as conn:
            released = await _finish_locks(conn, where, RELEASED, utcnow())
            locks = await _select_locks(conn, where)
        if released:
            log.info(
                "released %d lock(s) of saga %s: %s",
                len(released),
                request.saga_id,
                request.reason or "no reason given",
                extra={"saga_id": request.saga_id},
            )
        # Releasing what is already released (or consumed) changes nothing: a retried
        # cancellation must not fail.
        return pb.ReleaseLocksResponse(locks=locks)

    @staticmethod
    async def _existing(
        conn: AsyncConnection, saga_id: str, warehouse_id: str
    ) -> list[common_pb2.InventoryLock]:
        locks = await _select_locks(conn, _lock_selector(saga_id, warehouse_id))
        if not locks:
            raise NotFound(
                f"saga {saga_id!r} holds no locks"
                + (f" in {warehouse_id!r}" if warehouse_id else ""),
                reason="LOCKS_NOT_FOUND",
                metadata={"saga_id": saga_id, "warehouse_id": warehouse_id},
            )
        return locks

    @staticmethod
    def _not_held(
        saga_id: str, warehouse_id: str, locks, why: str
    ) -> FailedPrecondition:
        statuses = sorted({common_pb2.LockStatus.Name(lock.status) for lock in locks})
        return FailedPrecondition(
            f"the locks of saga {saga_id!r} are no longer held ({', '.join(statuses)}): {why}",
            reason="LOCKS_NOT_HELD",
            metadata={
                "saga_id": saga_id,
                "warehouse_id": warehouse_id,
                "statuses": ",".join(statuses),
            },
        )


class LockSweeper:
    """Releases expired locks whose picking has not started, then tells notify about each saga.

    The release commits before any notification is sent; a lock stays ``notify_pending``
    until notify accepted its notification, so an outage of notify delays the notice but never
    the stock.
    """

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.interval = settings.saga.expiry.cleanup_interval
        self._channel: grpc.aio.Channel | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:  # the next round tries again
                log.exception("lock sweep failed")

    async def sweep(self) -> int:
        expired = 0
        while True:
            now = utcnow()
            async with self.engine.begin() as conn:
                batch = await _finish_locks(
                    conn,
                    (L.c.picking == false()) & (L.c.expires_at < now),
                    EXPIRED,
                    now,
                    limit=SWEEP_BATCH,
                    skip_locked=True,
                )
            expired += len(batch)
            if len(batch) < SWEEP_BATCH:
                break
        if expired:
            metrics.EXPIRED_LOCKS.inc(expired)
            log.info("released %d expired lock(s)", expired)
        await self.notify_pending()
        return expired

    async def notify_pending(self) -> None:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(L)
                    .where(L.c.notify_pending == true())
                    .order_by(L.c.saga_id, L.c.lock_id)
                    .limit(SWEEP_BATCH)
                )
            ).all()
        by_saga: dict[str, list[logic.LockedUnits]] = defaultdict(list)
        for row in rows:
            by_saga[row.saga_id].append(_locked_units(row))
        for saga_id, locks in by_saga.items():
            order_id, message, attributes = logic.expiry_notice(saga_id, locks)
            request = notify_pb2.SendNotificationRequest(
                kind=common_pb2.NOTIFICATION_KIND_LOCK_EXPIRED,
                saga_id=saga_id,
                order_id=order_id,
                message=message,
                attributes=attributes,
            )
            try:
                await self._notify().SendNotification(request, timeout=NOTIFY_TIMEOUT)
            except grpc.RpcError as err:
                log.warning(
                    "expiry notification for saga %s not sent (%s); retrying at the next sweep",
                    saga_id,
                    err.code() if hasattr(err, "code") else err,
                    extra={"saga_id": saga_id},
                )
                # A fresh channel next time: the old one may sit in reconnect backoff for
                # longer than the sweep interval after notify comes back.
                await self.close()
                return
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(L)
                    .where(L.c.lock_id.in_([lock.lock_id for lock in locks]))
                    .values(notify_pending=False)
                )

    def _notify(self) -> notify_pb2_grpc.NotifyServiceStub:
        if self._channel is None:
            self._channel = channel_to(self.settings, "notify")
        return notify_pb2_grpc.NotifyServiceStub(self._channel)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()


async def build(settings: Settings) -> App:
    engine = await open_service_database(settings, models.metadata, models.__file__)
    sweeper = LockSweeper(engine, settings)
    metrics.track_inventory_utilisation(engine, S)
    return App(
        services=[
            registration(InventoryServicer(engine), pb_grpc, "InventoryService"),
            registration(
                InventoryStepServicer(engine, settings), pb_grpc, "InventoryStepService"
            ),
        ],
        background=[sweeper.run],
        on_stop=[sweeper.close, engine.dispose],
    )
