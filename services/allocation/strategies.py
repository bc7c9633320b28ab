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

COST_OPTIMIZE solves a small MILP exactly with SciPy's HiGHS (``scipy.optimize.milp``) under a
time cap; if the cap is hit the best plan found (or a greedy incumbent) is returned with
``optimal=False``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

__all__ = [
    "STRATEGIES",
    "AllocationError",
    "Candidate",
    "Demand",
    "Plan",
    "PlanLine",
    "allocate",
    "haversine_km",
    "plan_cost",
]

STRATEGIES = ("PRIORITY", "NEAREST", "LOAD_BALANCE", "COST_OPTIMIZE")

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius


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


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in km between two (lat, lon) points in degrees."""
    lat1, lon1 = math.radians(a[0]), math.radians(a[1])
    lat2, lon2 = math.radians(b[0]), math.radians(b[1])
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


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
    lines: Iterable[PlanLine],
    candidates: Sequence[Candidate],
    customer: tuple[float, float] | None = None,
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
    v = stock.get((wid, sku), 0)
    return v if v > 0 else 0


# --------------------------------------------------------------------------------------------
# greedy fill with augmenting-path repair


class _Fill:
    """Mutable allocation state: x[(w, sku)] units, capacity left per warehouse."""

    def __init__(self, order: Sequence[Candidate], stock: Mapping[tuple[str, str], int]):
        self.order = order
        self.stock = stock
        self.cap = {c.warehouse_id: c.remaining_capacity for c in order}
        self.x: dict[tuple[str, str], int] = {}
        self.by_sku: dict[str, list[str]] = {}  # warehouses holding units of sku, fill order

    def _add(self, wid: str, sku: str, q: int) -> None:
        key = (wid, sku)
        old = self.x.get(key, 0)
        if old == 0:
            self.by_sku.setdefault(sku, []).append(wid)
        self.x[key] = old + q
        self.cap[wid] -= q

    def _remove(self, wid: str, sku: str, q: int) -> None:
        key = (wid, sku)
        left = self.x[key] - q
        self.cap[wid] += q
        if left:
            self.x[key] = left
        else:
            del self.x[key]
            self.by_sku[sku].remove(wid)

    def greedy(self, sku: str, need: int) -> int:
        """Fill from the warehouses in order; returns what is still needed."""
        stock, cap = self.stock, self.cap
        for c in self.order:
            wid = c.warehouse_id
            room = cap[wid]
            if room <= 0:
                continue
            s = stock.get((wid, sku), 0)
            if s <= 0:
                continue
            q = min(need, s, room)
            self._add(wid, sku, q)
            need -= q
            if need == 0:
                return 0
        return need

    def augment(self, sku: str, need: int) -> int:
        """Move placed units along augmenting paths to make room for `need` more of `sku`.

        Residual graph: sku j -> warehouse w while w still has stock of j not yet used;
        warehouse w -> sku j while units of j are placed at w (they can move elsewhere);
        a warehouse with capacity left ends the path.  Breadth first, warehouses visited in the
        strategy's order, so the earliest warehouses keep their units where possible.
        """
        while need > 0:
            path = self._find_path(sku)
            if path is None:
                return need
            # path: [sku0, w0, sku1, w1, ..., wk]; add sku_i at w_i, remove sku_{i+1} from w_i
            delta = min(need, self.cap[path[-1]])
            for i in range(0, len(path), 2):
                s, w = path[i], path[i + 1]
                delta = min(delta, _stock_of(self.stock, w, s) - self.x.get((w, s), 0))
                if i + 2 < len(path):
                    delta = min(delta, self.x[(w, path[i + 2])])
            for i in range(0, len(path), 2):
                s, w = path[i], path[i + 1]
                self._add(w, s, delta)
                if i + 2 < len(path):
                    self._remove(w, path[i + 2], delta)
            need -= delta
        return 0

    def _find_path(self, sku: str) -> list[str] | None:
        parent_w: dict[str, str] = {}  # warehouse -> sku it was reached from
        parent_s: dict[str, str | None] = {sku: None}  # sku -> warehouse it was reached from
        queue = deque([sku])
        while queue:
            s = queue.popleft()
            for c in self.order:
                w = c.warehouse_id
                if w in parent_w or _stock_of(self.stock, w, s) - self.x.get((w, s), 0) <= 0:
                    continue
                parent_w[w] = s
                if self.cap[w] > 0:
                    path = [w]
                    while True:
                        s2 = parent_w[path[-1]]
                        path.append(s2)
                        w2 = parent_s[s2]
                        if w2 is None:
                            return path[::-1]
                        path.append(w2)
                for (w3, s3), q in self.x.items():
                    if w3 == w and q > 0 and s3 not in parent_s:
                        parent_s[s3] = w
                        queue.append(s3)
        return None

    def lines(self, items: Sequence[tuple[str, int]]) -> tuple[PlanLine, ...]:
        out = []
        for sku, _ in items:
            for wid in self.by_sku.get(sku, ()):
                out.append(PlanLine(wid, sku, self.x[(wid, sku)]))
        return tuple(out)


def _fill_or_raise(
    items: Sequence[tuple[str, int]],
    order: Sequence[Candidate],
    stock: Mapping[tuple[str, str], int],
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
    shortages = []
    for sku, q in items:
        total = sum(_stock_of(stock, c.warehouse_id, sku) for c in candidates)
        if total < q:
            shortages.append((sku, q, total))
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
    candidates: Sequence[Candidate],
    preferred: Sequence[str],
    key: Callable[[Candidate], object],
) -> list[Candidate]:
    by_id = {c.warehouse_id: c for c in candidates}
    head: list[Candidate] = []
    for wid in preferred:
        c = by_id.pop(wid, None)
        if c is not None:
            head.append(c)
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
    return _order(
        candidates,
        preferred,
        lambda c: (0, d) if (d := _distance(c, customer)) is not None else (1, 0.0),
    )


# --------------------------------------------------------------------------------------------
# COST_OPTIMIZE


def _check_positions(candidates: Sequence[Candidate], customer) -> None:
    for c in candidates:
        if c.per_km_unit and (c.lat is None or c.lon is None):
            raise ValueError(f"warehouse {c.warehouse_id!r} has a per-km cost but no coordinates")


def _cost_optimize(items, candidates, stock, preferred, customer, time_limit) -> tuple[tuple[PlanLine, ...], bool]:
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_array

    unit = {c.warehouse_id: _unit_cost(c, _distance(c, customer)) for c in candidates}

    # Feasibility (exact, by augmenting paths) and a greedy incumbent: cheapest unit cost first.
    incumbent = _fill_or_raise(
        items, _order(candidates, (), lambda c: (unit[c.warehouse_id], c.per_shipment)), stock
    ).lines(items)

    # Tie-break: preferred warehouses (in the order given), then warehouse id.  A per-unit
    # penalty far below any cost difference that matters, so it only separates equal-cost plans.
    rank = {c.warehouse_id: i for i, c in enumerate(_order(candidates, preferred, lambda c: 0))}
    n = max(1, len(candidates))
    total_q = sum(q for _, q in items)
    scale = max([1.0] + [abs(unit[w]) for w in unit] + [abs(c.per_shipment) for c in candidates])
    eps = 1e-9 * scale / (total_q * n)

    # Variables: x[w,i] for stocked pairs at warehouses with room, then y[w] (used) for the
    # warehouses that carry a shipment charge.
    cols_w: list[str] = []
    cols_i: list[int] = []
    ub: list[float] = []
    obj: list[float] = []
    for i, (sku, q) in enumerate(items):
        for c in candidates:
            w = c.warehouse_id
            if c.remaining_capacity <= 0:
                continue
            s = _stock_of(stock, w, sku)
            if s <= 0:
                continue
            cols_w.append(w)
            cols_i.append(i)
            ub.append(min(s, q, c.remaining_capacity))
            obj.append(unit[w] + eps * (rank[w] + 1))
    nx = len(cols_w)
    per_w: dict[str, list[int]] = {}
    for k, w in enumerate(cols_w):
        per_w.setdefault(w, []).append(k)
    by_id = {c.warehouse_id: c for c in candidates}
    ycol: dict[str, int] = {}
    for w in per_w:
        if by_id[w].per_shipment > 0:
            ycol[w] = nx + len(ycol)
            obj.append(by_id[w].per_shipment)
            ub.append(1)
    nvar = nx + len(ycol)

    rows, cols, vals, lo, hi = [], [], [], [], []
    r = 0
    # each item exactly
    for k in range(nx):
        rows.append(cols_i[k])
        cols.append(k)
        vals.append(1.0)
    for _, q in items:
        lo.append(q)
        hi.append(q)
    r = len(items)
    for w, ks in per_w.items():
        room = by_id[w].remaining_capacity
        reach = sum(ub[k] for k in ks)
        y = ycol.get(w)
        if y is None:
            if reach > room:  # capacity can bind
                for k in ks:
                    rows.append(r)
                    cols.append(k)
                    vals.append(1.0)
                lo.append(-np.inf)
                hi.append(room)
                r += 1
            continue
        # Σ_i x[w,i] ≤ min(room, reach)·y[w], and x[w,i] ≤ ub·y[w] (tightens the relaxation)
        for k in ks:
            rows.append(r)
            cols.append(k)
            vals.append(1.0)
        rows.append(r)
        cols.append(y)
        vals.append(-float(min(room, reach)))
        lo.append(-np.inf)
        hi.append(0.0)
        r += 1
        if len(ks) > 1:
            for k in ks:
                rows += [r, r]
                cols += [k, y]
                vals += [1.0, -float(ub[k])]
                lo.append(-np.inf)
                hi.append(0.0)
                r += 1

    a = coo_array((vals, (rows, cols)), shape=(r, nvar)).tocsr()
    remaining = max(0.01, time_limit)
    res = milp(
        c=np.asarray(obj),
        integrality=np.ones(nvar),
        bounds=Bounds(np.zeros(nvar), np.asarray(ub, dtype=float)),
        constraints=LinearConstraint(a, np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)),
        options={"time_limit": remaining, "mip_rel_gap": 1e-9, "presolve": True},
    )
    if res.x is None:
        return incumbent, False

    xs = np.rint(res.x[:nx]).astype(int)
    placed: dict[tuple[str, int], int] = {}
    for k in range(nx):
        if xs[k] > 0:
            placed[(cols_w[k], cols_i[k])] = int(xs[k])
    lines = tuple(
        PlanLine(w, sku, placed[(w, i)])
        for i, (sku, _) in enumerate(items)
        for w in sorted((w for (w, j) in placed if j == i), key=lambda w: rank[w])
    )
    if not _valid(lines, items, candidates, stock):  # numerical trouble: keep the incumbent
        return incumbent, False
    optimal = res.status == 0
    if not optimal and plan_cost(incumbent, candidates, customer) < plan_cost(lines, candidates, customer):
        return incumbent, False
    return lines, optimal


def _valid(lines, items, candidates, stock) -> bool:
    need = dict(items)
    cap = {c.warehouse_id: c.remaining_capacity for c in candidates}
    for ln in lines:
        if ln.quantity <= 0 or ln.quantity > _stock_of(stock, ln.warehouse_id, ln.sku):
            return False
        need[ln.sku] -= ln.quantity
        cap[ln.warehouse_id] -= ln.quantity
    return all(v == 0 for v in need.values()) and all(v >= 0 for v in cap.values())


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
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown allocation strategy {strategy!r}")
    if strategy in ("NEAREST", "COST_OPTIMIZE"):
        customer = _require_customer(strategy, customer)
    elif customer is not None:
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
        _check_positions(candidates, customer)
        started = time.perf_counter()
        lines, optimal = _cost_optimize(items, candidates, stock, preferred, customer, time_limit)
        del started
    else:
        order = _greedy_order(strategy, candidates, preferred, customer)
        lines, optimal = _fill_or_raise(items, order, stock).lines(items), True
    return Plan(strategy, lines, plan_cost(lines, candidates, customer), optimal)
