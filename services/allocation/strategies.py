"""Allocation strategies (SPEC §3): pure functions, no I/O, no gRPC.

Every strategy allocates each item fully or fails.  Per plan line the quantity never exceeds
the stock available at that warehouse, and per warehouse the units over all items never exceed
its remaining capacity (``capacity - locked_units``).

The three greedy strategies (PRIORITY, NEAREST, LOAD_BALANCE) order the warehouses once
(``preferred`` first, in the order given; then the strategy's key; ties by warehouse id) and
fill the items one after another, each from the first warehouse in that order that still has
stock and capacity.  When an item cannot be completed because capacity binds, units already
placed are moved along an augmenting path (max-flow style) so that a strategy fails only when
no allocation at all exists: INSUFFICIENT_INVENTORY when some item's total stock across the
candidates is short, CAPACITY_EXCEEDED otherwise.  When the greedy fill completes without
help (the usual case) the plan is exactly the documented greedy order.

COST_OPTIMIZE solves the MILP exactly with HiGHS (``highspy``) under a wall-clock cap that
covers the whole call: LP relaxation, a local search and a restricted MILP for a good plan,
reduced-cost fixing against that plan, then branch and bound on what is left.  If the cap is hit
the best plan found is returned with ``optimal=False``; see ``cost._cost_optimize``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from invsaga.domain.geo import haversine_km

__all__ = ["STRATEGIES", "AllocationError", "Candidate", "Demand", "Plan", "PlanLine", "allocate", "plan_cost"]

STRATEGIES = ("PRIORITY", "NEAREST", "LOAD_BALANCE", "COST_OPTIMIZE")


@dataclass(frozen=True)
class Candidate:
    warehouse_id: str
    priority: int  # higher first for PRIORITY
    capacity: int  # outbound handling units
    locked_units: int  # units currently locked there
    lat: float | None = None
    lon: float | None = None
    per_unit: float = 0.0
    per_km_unit: float = 0.0
    per_shipment: float = 0.0

    @property
    def remaining_capacity(self) -> int:
        return max(0, self.capacity - self.locked_units)

    @property
    def utilisation(self) -> float:
        """1 - remaining/capacity; a warehouse without capacity counts as fully used."""
        if self.capacity <= 0:
            return 1.0
        return 1.0 - self.remaining_capacity / self.capacity


@dataclass(frozen=True)
class Demand:
    sku: str
    quantity: int


@dataclass(frozen=True)
class PlanLine:
    warehouse_id: str
    sku: str
    quantity: int


@dataclass(frozen=True)
class Plan:
    strategy: str
    lines: tuple[PlanLine, ...]
    total_cost: float
    optimal: bool


class AllocationError(Exception):
    """A business failure of the allocation step.

    ``reason`` is ``INSUFFICIENT_INVENTORY`` (some item's total stock across the candidates is
    short; ``shortages`` lists every such item as ``(sku, required, available)``),
    ``CAPACITY_EXCEEDED`` (stock suffices but the warehouses' remaining capacity cannot take the
    order; ``shortages`` lists the items that did not fit as ``(sku, required, placed)``) or
    ``NO_CANDIDATES`` (no warehouse to allocate from; every item with ``available = 0``).
    """

    def __init__(self, reason: str, shortages: Iterable[tuple[str, int, int]], message: str = ""):
        self.reason = reason
        self.shortages = list(shortages)
        super().__init__(message or f"{reason}: {self.shortages}")


def _distance(c: Candidate, customer: tuple[float, float] | None) -> float | None:
    """km from warehouse to customer; 0 without a customer; None when the warehouse has no position."""
    if customer is None:
        return 0.0
    if c.lat is None or c.lon is None:
        return None
    return haversine_km((c.lat, c.lon), customer)


def _unit_cost(c: Candidate, km: float | None) -> float:
    # A warehouse without coordinates contributes no distance cost (COST_OPTIMIZE refuses such
    # warehouses when their distance would matter, see _check_positions).
    return c.per_unit + c.per_km_unit * (km or 0.0)


def plan_cost(
    lines: Iterable[PlanLine], candidates: Sequence[Candidate], customer: tuple[float, float] | None = None
) -> float:
    """Σ q·(per_unit + per_km_unit·km) + Σ_{w used} per_shipment; km = 0 without a customer."""
    by_id = {c.warehouse_id: c for c in candidates}
    unit: dict[str, float] = {}
    total = 0.0
    for line in lines:
        if line.quantity <= 0:
            continue
        u = unit.get(line.warehouse_id)
        if u is None:
            c = by_id[line.warehouse_id]
            u = unit[line.warehouse_id] = _unit_cost(c, _distance(c, customer))
            total += c.per_shipment
        total += line.quantity * u
    return total


# --------------------------------------------------------------------------------------------
# input normalisation


def _merge_demands(demands: Sequence[Demand]) -> list[tuple[str, int]]:
    """One entry per SKU, first-appearance order, quantities summed."""
    merged: dict[str, int] = {}
    for d in demands:
        if d.quantity <= 0:
            raise ValueError(f"quantity for {d.sku!r} must be positive, got {d.quantity}")
        merged[d.sku] = merged.get(d.sku, 0) + d.quantity
    return list(merged.items())


def _check_candidates(candidates: Sequence[Candidate]) -> None:
    seen: set[str] = set()
    for c in candidates:
        if c.warehouse_id in seen:
            raise ValueError(f"duplicate candidate warehouse {c.warehouse_id!r}")
        seen.add(c.warehouse_id)


def _stock_of(stock: Mapping[tuple[str, str], int], wid: str, sku: str) -> int:
    return max(stock.get((wid, sku), 0), 0)


# --------------------------------------------------------------------------------------------
# greedy fill with augmenting-path repair


class _Fill:
    """Mutable allocation state: units placed per warehouse and SKU, capacity left."""

    def __init__(self, order: Sequence[Candidate], stock: Mapping[tuple[str, str], int]):
        self.order = order
        self.stock = stock
        self.cap = {c.warehouse_id: c.remaining_capacity for c in order}
        self.at: dict[str, dict[str, int]] = {c.warehouse_id: {} for c in order}
        self.by_sku: dict[str, list[str]] = {}  # warehouses holding units of sku, in fill order

    def _add(self, wid: str, sku: str, q: int) -> None:
        here = self.at[wid]
        old = here.get(sku, 0)
        if old == 0:
            self.by_sku.setdefault(sku, []).append(wid)
        here[sku] = old + q
        self.cap[wid] -= q

    def _remove(self, wid: str, sku: str, q: int) -> None:
        here = self.at[wid]
        left = here[sku] - q
        self.cap[wid] += q
        if left:
            here[sku] = left
        else:
            del here[sku]
            self.by_sku[sku].remove(wid)

    def _spare_stock(self, wid: str, sku: str) -> int:
        return _stock_of(self.stock, wid, sku) - self.at[wid].get(sku, 0)

    def greedy(self, sku: str, need: int) -> int:
        """Fill from the warehouses in order; returns what is still needed."""
        stock, cap = self.stock, self.cap
        for c in self.order:
            wid = c.warehouse_id
            room = cap[wid]
            s = stock.get((wid, sku), 0)
            if room <= 0 or s <= 0:
                continue
            q = min(need, s, room)
            self._add(wid, sku, q)
            need -= q
            if need == 0:
                return 0
        return need

    def augment(self, sku: str, need: int) -> int:
        """Move placed units along augmenting paths to make room for `need` more of `sku`.

        Residual graph: SKU j -> warehouse w while w has stock of j not yet used; warehouse
        w -> SKU j while units of j are placed at w (they may move elsewhere); a warehouse with
        capacity left ends the path.  Breadth first, warehouses visited in the strategy's order.
        Returns what is still needed (0 unless no allocation of the order exists).
        """
        while need > 0:
            path = self._find_path(sku)
            if path is None:
                return need
            # path = [s0, w0, s1, w1, ..., sk, wk]: add s_i at w_i, move s_{i+1} out of w_i
            delta = min(need, self.cap[path[-1]])
            for i in range(0, len(path), 2):
                delta = min(delta, self._spare_stock(path[i + 1], path[i]))
                if i + 2 < len(path):
                    delta = min(delta, self.at[path[i + 1]][path[i + 2]])
            for i in range(0, len(path), 2):
                self._add(path[i + 1], path[i], delta)
                if i + 2 < len(path):
                    self._remove(path[i + 1], path[i + 2], delta)
            need -= delta
        return 0

    def _find_path(self, sku: str) -> list[str] | None:
        reached_w: dict[str, str] = {}  # warehouse -> SKU it was reached from
        reached_s: dict[str, str | None] = {sku: None}  # SKU -> warehouse it was reached from
        queue = deque([sku])
        while queue:
            s = queue.popleft()
            for c in self.order:
                w = c.warehouse_id
                if w in reached_w or self._spare_stock(w, s) <= 0:
                    continue
                reached_w[w] = s
                if self.cap[w] > 0:
                    path = [w]
                    while True:
                        s_prev = reached_w[path[-1]]
                        path.append(s_prev)
                        w_prev = reached_s[s_prev]
                        if w_prev is None:
                            return path[::-1]
                        path.append(w_prev)
                for s_next in self.at[w]:
                    if s_next not in reached_s:
                        reached_s[s_next] = w
                        queue.append(s_next)
        return None

    def lines(self, items: Sequence[tuple[str, int]]) -> tuple[PlanLine, ...]:
        """One line per (warehouse, SKU) used; items in demand order, warehouses in fill order."""
        rank = {c.warehouse_id: i for i, c in enumerate(self.order)}
        return tuple(
            PlanLine(wid, sku, self.at[wid][sku])
            for sku, _ in items
            for wid in sorted(self.by_sku.get(sku, ()), key=rank.__getitem__)
        )


def _fill_or_raise(
    items: Sequence[tuple[str, int]], order: Sequence[Candidate], stock: Mapping[tuple[str, str], int]
) -> _Fill:
    fill = _Fill(order, stock)
    missing: dict[str, int] = {}
    for sku, q in items:
        need = fill.greedy(sku, q)
        if need:
            need = fill.augment(sku, need)
        if need:
            missing[sku] = need
    if missing:
        _raise_failure(items, order, stock, missing)
    return fill


def _raise_failure(items, candidates, stock, missing) -> None:
    held = [(sku, q, sum(_stock_of(stock, c.warehouse_id, sku) for c in candidates)) for sku, q in items]
    shortages = [(sku, q, total) for sku, q, total in held if total < q]
    if shortages:
        raise AllocationError(
            "INSUFFICIENT_INVENTORY",
            shortages,
            "insufficient inventory: " + ", ".join(f"{s} needs {r}, {a} available" for s, r, a in shortages),
        )
    placed = [(sku, q, q - missing[sku]) for sku, q in items if sku in missing]
    raise AllocationError(
        "CAPACITY_EXCEEDED",
        placed,
        "remaining warehouse capacity cannot take the order: "
        + ", ".join(f"{s} needs {r}, {p} fit" for s, r, p in placed),
    )


# --------------------------------------------------------------------------------------------
# warehouse orders


def _order(
    candidates: Sequence[Candidate], preferred: Sequence[str], key: Callable[[Candidate], object]
) -> list[Candidate]:
    by_id = {c.warehouse_id: c for c in candidates}
    head = [c for wid in preferred if (c := by_id.pop(wid, None)) is not None]
    return head + sorted(by_id.values(), key=lambda c: (key(c), c.warehouse_id))


def _require_customer(strategy: str, customer) -> tuple[float, float]:
    if customer is None:
        raise ValueError(f"{strategy} needs the customer's location (lat/lon or a resolvable address)")
    lat, lon = float(customer[0]), float(customer[1])
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0) or math.isnan(lat) or math.isnan(lon):
        raise ValueError(f"customer location out of range: {customer!r}")
    return lat, lon


def _greedy_order(strategy, candidates, preferred, customer) -> list[Candidate]:
    if strategy == "PRIORITY":
        return _order(candidates, preferred, lambda c: -c.priority)
    if strategy == "LOAD_BALANCE":
        return _order(candidates, preferred, lambda c: c.utilisation)
    # NEAREST: warehouses without a position go last
    return _order(candidates, preferred, lambda c: (0, d) if (d := _distance(c, customer)) is not None else (1, 0.0))


# --------------------------------------------------------------------------------------------
# entry point


def allocate(
    strategy: str,
    demands: Sequence[Demand],
    candidates: Sequence[Candidate],
    stock: Mapping[tuple[str, str], int],
    preferred: Sequence[str] = (),
    customer: tuple[float, float] | None = None,
    time_limit: float = 0.15,
) -> Plan:
    """Plan the order with one strategy.

    Raises ValueError for bad input (unknown strategy, non-positive quantity, duplicate
    candidates, a missing customer location for NEAREST / COST_OPTIMIZE) and AllocationError
    for business failures.
    """
    started = time.perf_counter()
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown allocation strategy {strategy!r}")
    if customer is not None or strategy in ("NEAREST", "COST_OPTIMIZE"):
        customer = _require_customer(strategy, customer)
    items = _merge_demands(demands)
    _check_candidates(candidates)
    if not items:
        return Plan(strategy, (), 0.0, True)
    if not candidates:
        raise AllocationError(
            "NO_CANDIDATES", [(sku, q, 0) for sku, q in items], "no candidate warehouses for the order"
        )

    if strategy == "COST_OPTIMIZE":
        from services.allocation.cost import _check_positions, _cost_optimize

        _check_positions(candidates)
        lines, optimal = _cost_optimize(items, candidates, stock, preferred, customer, time_limit, started)
    else:
        order = _greedy_order(strategy, candidates, preferred, customer)
        lines, optimal = _fill_or_raise(items, order, stock).lines(items), True
    return Plan(strategy, lines, plan_cost(lines, candidates, customer), optimal)
