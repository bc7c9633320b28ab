"""The inventory's SQL statements, and the parameters they take.

Every stock change is one conditional UPDATE whose WHERE clause states the rule it must keep
(``on_hand - locked >= units`` and friends), so concurrent requests cannot oversell even
without the CHECK constraints that back it up in the database. Every statement takes rows in
one order: a saga's locks in lock_id order, then the warehouses' load rows (their locked
units, against which capacity is enforced) in warehouse order, then stock rows in (warehouse,
SKU) order, so concurrent sagas and releases may wait on one another but never deadlock,
statement against statement. (Locks the statement pipe sends together share a transaction and
can; see GATE and store._again_after_deadlock.)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2 as pb
from services.common import fields
from services.inventory import logic
from services.inventory.logic import CONSUMED
from services.inventory.transfer_rules import CANCELLED, EXPECTED, IN_TRANSIT

# LockInventory statements an Execute tries when the stock it found short is there again by
# the time it looks (released in between).
LOCK_ATTEMPTS = 3

# What a stock UPDATE does with the units of each row it claims.
TAKE = "locked = stock.locked + claimed.units"
GIVE_BACK = "locked = stock.locked - claimed.units"
CONSUME = "locked = stock.locked - claimed.units, on_hand = stock.on_hand - claimed.units"

# CheckAvailability in one read: the stock rows of the requested SKUs in the candidate
# warehouses, then one row per warehouse (sku NULL) with the units locked over all its SKUs,
# the allocation step's load figure. That figure is the warehouse's load row (TAKE_LOAD,
# GIVE_BACK_LOAD: every change of a stock row's locked units changes it in the same statement),
# one row per warehouse rather than a sum over every stock row it has; a warehouse with no
# load row has never had a lock: 0.
AVAILABILITY = (
    "SELECT warehouse_id, sku, product_id, on_hand, locked, bin FROM stock"
    " WHERE warehouse_id = ANY(%(warehouse_ids)s::text[]) AND sku = ANY(%(skus)s::text[])"
    " UNION ALL"
    " SELECT warehouse_id, NULL, NULL, NULL, locked, NULL FROM warehouse_load"
    " WHERE warehouse_id = ANY(%(warehouse_ids)s::text[])"
)
AVAILABLE_ROWS = (
    "SELECT warehouse_id, sku, on_hand - locked FROM stock"
    " WHERE (warehouse_id, sku) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
)
# LockInventory's barrier row is written only where every stock row was taken and every
# warehouse had the capacity; otherwise the barrier refuses the whole statement, the rows
# taken included.
ALL_TAKEN = "(SELECT count(*) FROM took) = %(wanted_rows)s AND (SELECT count(*) FROM room) = %(load_rows)s"
# A lock, release or consumption first takes the load rows of the warehouses it touches (in
# warehouse order), then their stock rows: everything that moves a warehouse's locked units
# waits for its load row before any of its stock rows. That makes a group of locks the
# statement pipe sends in one transaction safe too, as long as they are at one warehouse
# (one statement after another, such a group holds the rows of the first while it waits for
# those of the next; a release that holds stock rows of the warehouse holds its load row, which
# the group already has). Counting ``gate`` in the stock UPDATE's WHERE (a one-time filter,
# evaluated before the UPDATE reads a row) makes PostgreSQL run it to its end first.
GATE = (
    "gate AS (SELECT warehouse_id FROM warehouse_load WHERE warehouse_id = ANY(%(load_warehouses)s::text[])"
    " ORDER BY warehouse_id FOR UPDATE)"
)
AFTER_GATE = " AND (SELECT count(*) FROM gate) >= 0"
# The units per warehouse: taken against its capacity by the lock, once every stock row was
# (ON CONFLICT DO UPDATE sees the latest committed row, so two concurrent locks cannot both fit
# in the same room; a warehouse's first lock inserts its row), given back by a release or a
# consumption, once every stock row was (a count runs the stock CTE to its end; an EXISTS would
# stop at its first row).
TAKE_LOAD = (
    "room AS (INSERT INTO warehouse_load AS l (warehouse_id, locked, capacity)"
    " SELECT w, u, c FROM unnest(%(load_warehouses)s::text[], %(load_units)s::bigint[], %(load_caps)s::bigint[])"
    " AS x(w, u, c) WHERE u <= c AND (SELECT count(*) FROM took) = %(wanted_rows)s ORDER BY w"
    " ON CONFLICT (warehouse_id) DO UPDATE SET locked = l.locked + EXCLUDED.locked, capacity = EXCLUDED.capacity"
    " WHERE l.locked + EXCLUDED.locked <= EXCLUDED.capacity RETURNING l.warehouse_id)"
)
GIVE_BACK_LOAD = (
    "load_back AS (UPDATE warehouse_load AS l SET locked = l.locked - given.u"
    " FROM unnest(%(load_warehouses)s::text[], %(load_units)s::bigint[]) AS given(w, u)"
    " WHERE l.warehouse_id = given.w AND (SELECT count(*) FROM stock_back) > 0)"
)
LOADS = "SELECT warehouse_id, locked, capacity FROM warehouse_load WHERE warehouse_id = ANY(%s::text[])"

SELECTOR = "saga_id = %(saga_id)s AND (%(warehouse_id)s = '' OR warehouse_id = %(warehouse_id)s)"
UNITS = "SELECT lock_id, saga_id, order_id, warehouse_id, sku, quantity FROM locks WHERE"
HELD = f"{UNITS} status = 'held' AND {SELECTOR} ORDER BY lock_id FOR UPDATE"
FINISH = (
    "finished AS (UPDATE locks SET status = %(status)s, updated_at = %(now)s,"
    " notify_pending = notify_pending OR %(notify)s WHERE lock_id = ANY(%(lock_ids)s::text[]))"
)
LOCKS = "SELECT * FROM locks WHERE {} ORDER BY created_at, lock_id"
SAGA_LOCKS = LOCKS.format(SELECTOR)
HOLD = f"UPDATE locks SET picking = true, updated_at = %(now)s WHERE {SELECTOR} AND status = 'held' AND NOT picking"

STOCK = "SELECT * FROM stock WHERE warehouse_id = %(warehouse_id)s AND sku = %(sku)s"
# Every operator change of on_hand goes to the journal in the statement that makes it.
JOURNAL = (
    "journal AS (INSERT INTO adjustments (warehouse_id, sku, delta, on_hand_after, reason, created_at)"
    " SELECT warehouse_id, sku, %(delta)s, on_hand, %(reason)s, %(now)s FROM written) SELECT * FROM written"
)
SET_STOCK = (
    "WITH written AS (INSERT INTO stock (warehouse_id, sku, product_id, on_hand, locked, bin, updated_at)"
    " VALUES (%(warehouse_id)s, %(sku)s, %(product_id)s, %(on_hand)s, 0, %(bin)s, %(now)s)"
    " ON CONFLICT (warehouse_id, sku) DO UPDATE SET on_hand = excluded.on_hand, updated_at = excluded.updated_at,"
    # An empty product_id or bin keeps the stored one: setting a count does not erase the bin.
    " product_id = COALESCE(NULLIF(excluded.product_id, ''), stock.product_id),"
    " bin = COALESCE(NULLIF(excluded.bin, ''), stock.bin)"
    # No row back: it appeared, with locks, since it was read.
    f" WHERE stock.locked <= excluded.on_hand RETURNING *), {JOURNAL}"
)
ADJUST_STOCK = (
    "WITH written AS (UPDATE stock SET on_hand = on_hand + %(delta)s, updated_at = %(now)s"
    " WHERE warehouse_id = %(warehouse_id)s AND sku = %(sku)s"
    f" AND on_hand + %(delta)s >= locked AND on_hand + %(delta)s >= 0 RETURNING *), {JOURNAL}"
)

# Transfers (SPEC §10). The expectation: the destination's stock rows (made if missing) count
# the units as incoming, and one line per SKU records them, EXPECTED (IN_TRANSIT if the source's
# picklist completed first). Whether the goods already left (the outbound picklist completed,
# consuming the source's locks) is decided in this statement, with the saga's lock rows locked:
# a CommitLocks under way either committed before (its consumed locks are seen, the lines start
# IN_TRANSIT) or waits for this commit (and its SHIPPED, a later statement, moves them).
EXPECT = (
    "shipped AS (SELECT status FROM locks WHERE saga_id = %(saga_id)s ORDER BY lock_id FOR UPDATE),"
    " incoming_rows AS (INSERT INTO stock AS s (warehouse_id, sku, product_id, on_hand, locked, bin, incoming,"
    " updated_at) SELECT %(to_warehouse)s, x.sku, x.product_id, 0, 0, '', x.q, %(now)s"
    " FROM unnest(%(skus)s::text[], %(product_ids)s::text[], %(quantities)s::bigint[]) AS x(sku, product_id, q)"
    " ORDER BY x.sku ON CONFLICT (warehouse_id, sku) DO UPDATE SET incoming = s.incoming + EXCLUDED.incoming,"
    " updated_at = EXCLUDED.updated_at),"
    " new_lines AS (INSERT INTO transfer_lines (transfer_id, sku, from_warehouse, to_warehouse, quantity, received,"
    " status, expected_arrival, created_at, updated_at) SELECT %(transfer_id)s, x.sku, %(from_warehouse)s,"
    f" %(to_warehouse)s, x.q, 0, CASE WHEN EXISTS (SELECT 1 FROM shipped WHERE status = '{CONSUMED}')"
    f" THEN '{IN_TRANSIT}' ELSE '{EXPECTED}' END, %(expected_arrival)s, %(now)s, %(now)s"
    " FROM unnest(%(skus)s::text[], %(quantities)s::bigint[]) AS x(sku, q))"
)
DESTINATION_ROWS = (
    "SELECT * FROM stock WHERE warehouse_id = %(to_warehouse)s AND sku = ANY(%(skus)s::text[]) ORDER BY sku"
)
# A transfer's EXPECTED lines dropped (its saga rolled back, or its picklist was cancelled
# before it left): the destination no longer counts them as incoming.
DROP_EXPECTED = (
    f"dropped AS (UPDATE transfer_lines SET status = '{CANCELLED}', updated_at = %(now)s"
    f" WHERE transfer_id = %(saga_id)s AND status = '{EXPECTED}' RETURNING to_warehouse, sku, quantity),"
    " not_incoming AS (UPDATE stock SET incoming = stock.incoming - dropped.quantity, updated_at = %(now)s"
    " FROM dropped WHERE stock.warehouse_id = dropped.to_warehouse AND stock.sku = dropped.sku)"
)
EXPECTED_LINES = (
    f"SELECT sku FROM transfer_lines WHERE transfer_id = %(saga_id)s AND status = '{EXPECTED}' ORDER BY sku FOR UPDATE"
)
# The outbound picklist completed, consuming the source's locks: the lines are on the road,
# in the same transaction as the stock that left.
SHIPPED = (
    f"UPDATE transfer_lines SET status = '{IN_TRANSIT}', updated_at = %(now)s"
    f" WHERE transfer_id = %(saga_id)s AND status = '{EXPECTED}'"
    " AND (%(warehouse_id)s = '' OR from_warehouse = %(warehouse_id)s)"
)
TRANSFER_LINES = "SELECT * FROM transfer_lines WHERE transfer_id = %s ORDER BY sku"
RECEIVE = (
    "WITH booked AS (UPDATE transfer_lines AS t SET received = x.r, updated_at = %(now)s,"
    " status = CASE WHEN x.r = t.quantity THEN 'received' ELSE 'received_short' END"
    " FROM unnest(%(skus)s::text[], %(received)s::bigint[]) AS x(sku, r)"
    " WHERE t.transfer_id = %(transfer_id)s AND t.sku = x.sku RETURNING t.to_warehouse, t.sku, t.quantity, x.r)"
    " UPDATE stock SET on_hand = stock.on_hand + booked.r, incoming = stock.incoming - booked.quantity,"
    " updated_at = %(now)s FROM booked WHERE stock.warehouse_id = booked.to_warehouse AND stock.sku = booked.sku"
)


@functools.cache
def stock_change(rows: int, change: str) -> str:
    """One UPDATE of ``rows`` distinct stock rows (parameters ``w<i>``, ``s<i>``, ``q<i>``).

    It runs after ``gate`` (see GATE), which the statement must define. A sub-select first
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
        f"{short}{AFTER_GATE} RETURNING stock.warehouse_id"
    )


def stock_params(units: Sequence[tuple[str, str, int]]) -> dict[str, Any]:
    return {f"{name}{i}": value for i, row in enumerate(units) for name, value in zip("wsq", row)}


@functools.cache
def lock_writes(rows: int) -> str:
    """LockInventory as CTEs of its barrier row's statement: ``gate`` waits for the
    warehouses' load rows, ``took`` takes the stock, one conditional UPDATE, ``room`` the
    units against each warehouse's capacity (see ALL_TAKEN), and ``new_locks`` inserts the
    lock rows."""
    return (
        f"{GATE}, took AS ({stock_change(rows, TAKE)}), {TAKE_LOAD},"
        " new_locks AS (INSERT INTO locks (lock_id, saga_id, order_id, allocation_id,"
        " warehouse_id, sku, quantity, status, expires_at, picking, notify_pending, created_at,"
        " updated_at)"
        " SELECT line.lock_id, %(saga_id)s, %(order_id)s, %(allocation_id)s, line.warehouse_id,"
        " line.sku, line.quantity, 'held', %(expires_at)s, false, false, %(now)s, %(now)s"
        " FROM unnest(%(lock_ids)s::text[], %(warehouse_ids)s::text[], %(skus)s::text[],"
        " %(quantities)s::bigint[]) AS line(lock_id, warehouse_id, sku, quantity))"
    )


def lock_params(ctx: common_pb2.StepContext, inp: pb.LockInventoryInput, plan: logic.LockPlan) -> dict[str, Any]:
    return {
        **stock_params(plan.wanted),
        "now": plan.now,
        "wanted_rows": len(plan.wanted),
        "saga_id": ctx.saga_id,
        **fields(inp, "order_id allocation_id"),
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
