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
the best plan found is returned with ``optimal=False``; see ``_cost_optimize``.
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


def _check_positions(candidates: Sequence[Candidate]) -> None:
    for c in candidates:
        if c.per_km_unit and (c.lat is None or c.lon is None):
            raise ValueError(f"warehouse {c.warehouse_id!r} has a per-km cost but no coordinates")


class _Model:
    """The COST_OPTIMIZE MILP over numpy arrays, solved with HiGHS through ``highspy``.

    Variables: x[w,i] (units of item i from warehouse w) only for stocked pairs at warehouses
    with room, bounded by ``min(stock, quantity, room)``; y[w] (warehouse used) only where a
    shipment charge exists.  Rows: Σ_w x[w,i] = q[i]; Σ_i x[w,i] ≤ min(room, reach)·y[w]; and the
    disaggregated linking rows x[w,i] ≤ ub[w,i]·y[w], which make the LP relaxation tight enough
    to be a useful bound (gaps of 0.1–2 % on the benchmark family).

    x is continuous: once y is fixed the x part is a transportation problem (demand rows and
    capacity rows form a bipartite incidence matrix), so its vertices are integral and the MILP
    has the same optimum as the one with integer x, with branching on the y alone.  Plans are
    read back as integers and, should a solution not be integral, the x part is re-solved as an
    LP with y fixed (a vertex, hence integral).

    Warehouses are indexed in ascending unit cost (ties by id), which the greedy evaluation of
    the local search relies on.
    """

    def __init__(self, items, candidates, stock, unit):
        import numpy as np

        self.items = items
        n_items = len(items)
        q = np.array([qty for _, qty in items], dtype=float)
        item_index = {sku: i for i, (sku, _) in enumerate(items)}
        live = sorted(
            (c for c in candidates if c.remaining_capacity > 0), key=lambda c: (unit[c.warehouse_id], c.warehouse_id)
        )
        w_index = {c.warehouse_id: k for k, c in enumerate(live)}
        s = np.zeros((len(live), n_items))
        for (wid, sku), v in stock.items():
            k, i = w_index.get(wid), item_index.get(sku)
            if k is not None and i is not None and v > 0:
                s[k, i] = v
        room = np.array([c.remaining_capacity for c in live], dtype=float)
        ub = np.minimum(np.minimum(s, q[None, :]), room[:, None])
        keep = ub.max(axis=1) > 0 if len(live) else np.zeros(0, dtype=bool)
        self.wh = [c for c, k in zip(live, keep) if k]
        self.wids = [c.warehouse_id for c in self.wh]
        ub = ub[keep]
        self.n_w = n_w = len(self.wh)
        self.q = q
        self.room = room[keep]
        self.unit = np.array([unit[w] for w in self.wids], dtype=float)
        self.fixed = np.array([c.per_shipment for c in self.wh], dtype=float)
        self.fill_ub = np.minimum(s[keep], q[None, :])  # what a greedy fill can take, room aside
        # per uncovered unit in the local search: more than the most a unit and its share of
        # every shipment charge can cost
        self.penalty = 1.0 + 2.0 * (self.unit.max(initial=0.0) + self.fixed.sum())

        # columns: x in (warehouse, item) order, then y
        cw, ci = np.nonzero(ub)
        self.cw, self.ci = cw, ci
        self.nx = nx = len(cw)
        xub = ub[cw, ci]
        ycol = np.full(n_w, -1, dtype=np.int64)
        has_y = self.fixed > 0
        ycol[has_y] = nx + np.arange(int(has_y.sum()))
        self.ycol = ycol
        self.ny = int(has_y.sum())
        self.nvar = nx + self.ny
        self.cost = np.concatenate([self.unit[cw], self.fixed[has_y]])
        self.upper = np.concatenate([xub, np.ones(self.ny)])
        self.lower = np.zeros(self.nvar)

        # rows as (row, col, value) triplets
        per_w = np.bincount(cw, minlength=n_w)
        reach = np.bincount(cw, weights=xub, minlength=n_w)
        r_rows = [ci]
        r_cols = [np.arange(nx)]
        r_vals = [np.ones(nx)]
        lo = [q]
        hi = [q]
        n_rows = n_items
        # capacity rows: with y always (they double as Σ x ≤ reach·y); without y only where room binds
        cap_w = np.nonzero(has_y | (reach > self.room))[0]
        cap_row = np.full(n_w, -1, dtype=np.int64)
        cap_row[cap_w] = n_rows + np.arange(len(cap_w))
        sel = cap_row[cw] >= 0
        r_rows += [cap_row[cw[sel]]]
        r_cols += [np.nonzero(sel)[0]]
        r_vals += [np.ones(int(sel.sum()))]
        yw = cap_w[has_y[cap_w]]
        r_rows += [cap_row[yw]]
        r_cols += [ycol[yw]]
        r_vals += [-np.minimum(self.room[yw], reach[yw])]
        lo.append(np.full(len(cap_w), -np.inf))
        hi.append(np.where(has_y[cap_w], 0.0, self.room[cap_w]))
        n_rows += len(cap_w)
        # linking rows x[w,i] - ub·y[w] ≤ 0 where w has y and more than one column
        link = np.nonzero(has_y[cw] & (per_w[cw] > 1))[0]
        link_row = n_rows + np.arange(len(link))
        r_rows += [link_row, link_row]
        r_cols += [link, ycol[cw[link]]]
        r_vals += [np.ones(len(link)), -xub[link]]
        lo.append(np.full(len(link), -np.inf))
        hi.append(np.zeros(len(link)))
        n_rows += len(link)
        rows = np.concatenate(r_rows)
        order = np.argsort(rows, kind="stable")
        self.n_rows = n_rows
        self.a_index = np.concatenate(r_cols)[order].astype(np.int32)
        self.a_value = np.concatenate(r_vals)[order]
        self.a_start = np.searchsorted(rows[order], np.arange(n_rows + 1)).astype(np.int32)
        self.row_lo = np.concatenate(lo)
        self.row_hi = np.concatenate(hi)

    # ---------------------------------------------------------------------------- HiGHS

    def highs(self):
        """A HiGHS instance holding the LP relaxation.  Each `run` stops at its own time
        (perf_counter) through HiGHS's interrupt callbacks as well as its time limit: HiGHS
        looks at its clock only now and then, the callbacks come every simplex iteration."""
        import highspy

        lp = highspy.HighsLp()
        lp.num_col_ = self.nvar
        lp.num_row_ = self.n_rows
        lp.col_cost_ = self.cost
        lp.col_lower_ = self.lower
        lp.col_upper_ = self.upper
        lp.row_lower_ = self.row_lo
        lp.row_upper_ = self.row_hi
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = self.a_start
        lp.a_matrix_.index_ = self.a_index
        lp.a_matrix_.value_ = self.a_value
        h = highspy.Highs()
        h.silent()
        h.passModel(lp)

        def interrupt(event):
            # set both ways: HiGHS keeps the flag from an interrupted run into the next one
            event.interrupt(time.perf_counter() >= self.stop_at)

        h.cbSimplexInterrupt.subscribe(interrupt)
        h.cbMipInterrupt.subscribe(interrupt)
        return h

    stop_at = math.inf

    def run(self, h, until) -> bool:
        """Solve with HiGHS until `until` at the latest; False if no time was left to start."""
        left = until - time.perf_counter()
        if left <= 0:
            return False
        self.stop_at = until
        # HiGHS's time limit counts the run time of all runs of the instance so far
        h.setOptionValue("time_limit", h.getRunTime() + left)
        h.run()
        return True

    def set_columns(self, h, lower, upper, x_integer: bool = False, y_integer: bool = True) -> None:
        """Column bounds and integrality for the next run."""
        import highspy
        import numpy as np

        kind = {False: highspy.HighsVarType.kContinuous, True: highspy.HighsVarType.kInteger}
        idx = np.arange(self.nvar, dtype=np.int32)
        h.changeColsBounds(self.nvar, idx, lower, upper)
        h.changeColsIntegrality(self.nvar, idx, np.array([kind[x_integer]] * self.nx + [kind[y_integer]] * self.ny))

    def live_warehouses(self, upper):
        """Warehouses that may still ship under the column upper bounds `upper`."""
        import numpy as np

        ship = np.zeros(self.n_w, dtype=bool)
        ship[self.cw[upper[: self.nx] > 0]] = True
        has_y = self.ycol >= 0
        ship[has_y] &= upper[self.ycol[has_y]] > 0
        return np.nonzero(ship)[0]

    # ---------------------------------------------------------------------------- plans

    def columns(self, x_wi):
        """(n_w × n_items) units -> column vector with y = 1 where a warehouse ships."""
        import numpy as np

        v = np.zeros(self.nvar)
        v[: self.nx] = x_wi[self.cw, self.ci]
        used = x_wi.sum(axis=1) > 0
        v[self.ycol[used & (self.ycol >= 0)]] = 1.0
        return v

    def from_lines(self, lines):
        import numpy as np

        w_index = {w: k for k, w in enumerate(self.wids)}
        i_index = {sku: i for i, (sku, _) in enumerate(self.items)}
        x = np.zeros((self.n_w, len(self.items)))
        for ln in lines:
            x[w_index[ln.warehouse_id], i_index[ln.sku]] += ln.quantity
        return x

    def integral(self, col_value):
        """x part of a HiGHS solution as an (n_w × n_items) integer matrix, or None when it is
        not integral or misses an item's quantity."""
        import numpy as np

        xv = np.asarray(col_value[: self.nx], dtype=float)
        xr = np.rint(xv)
        if np.abs(xv - xr).max(initial=0.0) > 1e-6 or xr.min(initial=0.0) < 0:
            return None
        x = np.zeros((self.n_w, len(self.items)))
        x[self.cw, self.ci] = xr
        if not np.array_equal(x.sum(axis=0), self.q) or (x.sum(axis=1) > self.room).any():
            return None
        return x

    def value(self, x) -> float:
        return float((x.sum(axis=1) * self.unit).sum() + self.fixed[x.sum(axis=1) > 0].sum())

    def lines(self, x, rank) -> tuple[PlanLine, ...]:
        import numpy as np

        ws, iis = np.nonzero(x)
        placed = sorted((int(i), rank[self.wids[w]], self.wids[w], int(x[w, i])) for w, i in zip(ws, iis))
        return tuple(PlanLine(w, self.items[i][0], qty) for i, _, w, qty in placed)

    # ---------------------------------------------------------------------------- local search

    def greedy_costs(self, sets, want_x: bool = False):
        """Cost of serving the order from each set of warehouses (rows of `sets`: warehouse
        indices ascending, padded with n_w), each item from the cheapest members first within
        their stock.  Where that overloads a member's room, the set is filled again item after
        item within the room left.  Units left uncovered cost `penalty` each, more than any
        plan could save per unit, so that the search moves towards sets that cover the order.
        Returns (costs, fills or None); fills are (sets, members, items)."""
        import numpy as np

        n_items = len(self.items)
        ub = np.vstack([self.fill_ub, np.zeros((1, n_items))])[sets]  # (sets, members, items)
        room = np.append(self.room, 0.0)[sets]
        cum = np.cumsum(ub, axis=1)
        x = np.minimum(ub, np.maximum(self.q - (cum - ub), 0.0))
        short = np.maximum(self.q - cum[:, -1, :], 0.0).sum(axis=1)
        load = x.sum(axis=2)
        over = np.nonzero((load > room).any(axis=1))[0]
        if len(over):  # capacity binds: item after item within the room left
            left = room[over].copy()
            short[over] = 0.0
            for i in range(n_items):
                e = np.minimum(ub[over, :, i], left)
                c = np.cumsum(e, axis=1)
                take = np.minimum(e, np.maximum(self.q[i] - (c - e), 0.0))
                short[over] += np.maximum(self.q[i] - c[:, -1], 0.0)
                left -= take
                x[over, :, i] = take
            load[over] = room[over] - left
        cost = (load * np.append(self.unit, 0.0)[sets]).sum(axis=1)
        cost += ((load > 0) * np.append(self.fixed, 0.0)[sets]).sum(axis=1)
        cost += self.penalty * short
        return cost, (x if want_x else None)

    def local_search(self, start, shortlist, deadline):
        """Best-improvement search over sets of open warehouses (drop one, add one, swap one
        for one of `shortlist`) with the greedy fill as the evaluation.  Returns (cost, x) of
        the best set found, x as an (n_w × n_items) matrix; (inf, None) if no start is valid."""
        import numpy as np

        n_w = self.n_w
        best_cost, best_set = np.inf, None
        for s in start:
            s = np.unique(np.asarray(s, dtype=np.int64))
            if len(s) == 0:
                continue
            cost, _ = self.greedy_costs(s[None, :])
            if cost[0] < best_cost:
                best_cost, best_set = float(cost[0]), s
        if best_set is None:
            return np.inf, None
        shortlist = np.asarray(shortlist, dtype=np.int64)
        while time.perf_counter() < deadline:
            cur = best_set
            k = len(cur)
            closed = np.setdiff1d(np.arange(n_w), cur)
            drops = np.tile(cur, (k, 1))
            drops[np.arange(k), np.arange(k)] = n_w
            adds = np.hstack([np.tile(cur, (len(closed), 1)), closed[:, None]])
            sl = np.setdiff1d(shortlist, cur)
            swaps = np.tile(cur, (k * len(sl), 1))
            swaps[np.arange(k * len(sl)), np.repeat(np.arange(k), len(sl))] = np.tile(sl, k)
            # the cheap neighbourhood first; swaps (k × shortlist sets) only when it is exhausted
            for moves in ([drops if k > 1 else drops[:0], adds], [swaps]):
                width = max(m.shape[1] for m in moves)
                cand = np.vstack([np.pad(m, ((0, 0), (0, width - m.shape[1])), constant_values=n_w) for m in moves])
                if not len(cand):
                    continue
                cand.sort(axis=1)
                costs, _ = self.greedy_costs(cand)
                j = int(np.argmin(costs))
                if costs[j] < best_cost - 1e-9 * max(1.0, abs(best_cost)):
                    break
            else:
                break
            best_cost = float(costs[j])
            members = cand[j][cand[j] < n_w]
            _, x = self.greedy_costs(members[None, :], want_x=True)
            best_set = members[x[0].sum(axis=1) > 0]  # unused members would only be dead weight
        _, x = self.greedy_costs(best_set[None, :], want_x=True)
        out = np.zeros((n_w, len(self.items)))
        out[best_set] = x[0]
        if not np.array_equal(out.sum(axis=0), self.q):  # never covered the order
            return np.inf, None
        return best_cost, out


def _cost_optimize(items, candidates, stock, preferred, customer, time_limit, started):
    """Exact COST_OPTIMIZE under a wall-clock cap measured from `started` (allocate's entry).

    0. When every warehouse that could ship part of the order could ship all of it, the
       cheapest single warehouse is the optimum (``_single_warehouse``): no model is built.
    1. Feasibility by augmenting paths (raises AllocationError) and a greedy incumbent.
    2. LP relaxation: lower bound L and reduced costs.
    3. Local search over sets of open warehouses, started from the LP support and from the
       incumbent: upper bound U.  If U is within 1e-9 (relative) of L, U is proven optimal.
    4. Reduced-cost fixing: a column whose reduced cost exceeds U - L cannot be in any plan
       cheaper than U, so it is fixed at zero.  If more than RESTRICTED_MAX warehouses are left,
       a MILP restricted to the LP support, U's warehouses and the closed warehouses cheapest to
       open (by reduced cost) improves U first, and the fixing is redone against it.
    5. Branch and bound (HiGHS, started from U) on the MILP that is left, until the deadline;
       proving its optimum proves the optimum of the whole problem.
    The cheapest plan of all steps is returned, ``optimal`` only when HiGHS or the bound proves
    it.  Every HiGHS run stops at the deadline (interrupt callbacks), which keeps a reserve of
    the budget for building the answer.
    """
    import highspy
    import numpy as np

    optimal_status = highspy.HighsModelStatus.kOptimal
    # The solver stops at `deadline`; the rest of the budget is for reading the answer back.
    deadline = started + time_limit - min(0.1 * time_limit, SOLVER_RESERVE)
    unit = {c.warehouse_id: _unit_cost(c, _distance(c, customer)) for c in candidates}
    single = _single_warehouse(items, candidates, stock, preferred, unit)
    if single is not None:
        return single, True
    incumbent = _fill_or_raise(
        items, _order(candidates, (), lambda c: (unit[c.warehouse_id], c.per_shipment)), stock
    ).lines(items)
    rank = {c.warehouse_id: r for r, c in enumerate(_order(candidates, preferred, lambda c: 0))}
    model = _Model(items, candidates, stock, unit)
    best_x = model.from_lines(incumbent)
    best = model.value(best_x)
    optimal = False

    h = model.highs()
    if model.run(h, deadline) and h.getModelStatus() == optimal_status:
        bound = h.getInfo().objective_function_value
        sol = h.getSolution()
        col_value = np.asarray(sol.col_value)
        reduced = np.asarray(sol.col_dual)
        has_y = model.ycol >= 0
        # Local search from the LP solution rounded (warehouses at least half open, that is
        # x[w,i] ≥ ub/2 for some item); swaps try the closed warehouses that the LP finds
        # cheapest to open (smallest reduced cost of y).
        support = np.unique(model.cw[col_value[: model.nx] > 1e-9])
        opened = np.zeros(model.n_w)
        np.maximum.at(opened, model.cw, col_value[: model.nx] / model.upper[: model.nx])
        score = np.zeros(model.n_w)
        score[has_y] = reduced[model.ycol[has_y]]
        shortlist = np.argsort(score, kind="stable")[:SWAP_SHORTLIST]
        search_until = time.perf_counter() + SEARCH_SHARE * max(0.0, deadline - time.perf_counter())
        cost, x = model.local_search([np.nonzero(opened >= 0.5 - 1e-9)[0]], shortlist, search_until)
        if x is not None and cost < best:
            best, best_x = model.value(x), x

        for attempt in range(2):
            if best - bound <= _tol(best):
                optimal = True
                break
            # Reduced-cost fixing: a column whose LP reduced cost exceeds best - bound cannot
            # be part of a plan cheaper than `best` (margin for round-off); the incumbent's
            # columns stay free.  A MILP over what is left proves optimality for the whole.
            start = model.columns(best_x)
            upper = model.upper.copy()
            upper[(reduced > best - bound + 1e-6 * max(1.0, abs(best))) & (start <= 0)] = 0.0
            live = model.live_warehouses(upper)
            if attempt == 0 and len(live) > RESTRICTED_MAX:
                # Too many warehouses left to prove fast: first improve `best` with a MILP
                # restricted to the LP support, the best plan's warehouses and the closed
                # warehouses cheapest to open, then fix again against the better bound.
                allowed = np.zeros(model.n_w, dtype=bool)
                allowed[support] = True
                allowed[best_x.sum(axis=1) > 0] = True
                allowed[shortlist[:RESTRICTED_EXTRA]] = True
                upper[: model.nx][~allowed[model.cw]] = 0.0
                upper[model.ycol[has_y & ~allowed]] = 0.0
                until = time.perf_counter() + RESTRICTED_SHARE * max(0.0, deadline - time.perf_counter())
                _, _, x = _mip(model, h, upper, start, min(until, deadline))
                if x is not None and model.value(x) < best:
                    best, best_x = model.value(x), x
                continue
            proven, value, x = _mip(model, h, upper, start, deadline)
            if x is not None and model.value(x) < best:
                best, best_x = model.value(x), x
            optimal = proven and best <= value + _tol(value)
            break
    lines = model.lines(best_x, rank)

    # Ties: preferred warehouses first (in the order given), then warehouse id.  Only when two
    # warehouses could be interchangeable at equal cost, a second solve minimises the rank-
    # weighted units among the plans of (numerically) optimal cost.
    if optimal and _ties_possible(candidates, unit) and time.perf_counter() < deadline:
        lines2 = _tie_break(model, h, best, rank, deadline)
        if lines2 is not None and _valid(lines2, items, candidates, stock):
            if plan_cost(lines2, candidates, customer) <= best + 1e-7 * max(1.0, abs(best)):
                lines = lines2

    if not _valid(lines, items, candidates, stock):  # numerical trouble: keep the incumbent
        return incumbent, False
    return lines, optimal


def _single_warehouse(items, candidates, stock, preferred, unit) -> tuple[PlanLine, ...] | None:
    """The optimal plan when every warehouse that could ship any of the order could ship all of
    it (stock of every item and room for every unit), else None.

    Any plan then ships from warehouses that could each take the whole order; moving all its
    units to the one of them with the lowest unit cost costs no more per unit and leaves one
    shipment charge (charges are ≥ 0). So the cheapest single warehouse is optimal. It also
    wins the tie-break (fewest rank-weighted units among the optimal plans): a plan of several
    warehouses is optimal only if they share one unit cost and all but one have no shipment
    charge, and then its first warehouse in the tie order alone is optimal and weighs less.
    This is the usual small order of a well-stocked network, where building the MILP costs
    milliseconds and the answer microseconds.
    """
    total = sum(q for _, q in items)
    costs: dict[str, float] = {}
    for c in candidates:
        room = c.remaining_capacity
        held = [_stock_of(stock, c.warehouse_id, sku) for sku, _ in items]
        if room <= 0 or not any(held):
            continue  # ships nothing in any plan
        if room < total or c.per_shipment < 0 or any(h < q for h, (_, q) in zip(held, items)):
            return None
        costs[c.warehouse_id] = c.per_shipment + unit[c.warehouse_id] * total
    if not costs:
        return None
    best = min(costs.values())
    first = next(
        c.warehouse_id
        for c in _order(candidates, preferred, lambda c: 0)
        if costs.get(c.warehouse_id, math.inf) <= best + _tol(best)
    )
    return tuple(PlanLine(first, sku, q) for sku, q in items)


SOLVER_RESERVE = 0.01  # s of the budget kept for reading the answer back
SEARCH_SHARE = 0.2  # share of the time left after the LP that the local search may use
RESTRICTED_MAX = 24  # more warehouses left after fixing: restricted MILP first
RESTRICTED_SHARE = 0.4  # share of the time left that the restricted MILP may use
RESTRICTED_EXTRA = 20
SWAP_SHORTLIST = 30
MIP_OPTIONS = {
    "mip_rel_gap": 1e-9,
    "mip_abs_gap": 1e-9,
    "presolve": "on",
    # Plans come from our own search.  HiGHS's sub-MIP heuristics (RINS, RENS, root reduced
    # cost) and feasibility jump run without the interrupt callbacks and overran the deadline
    # by up to 0.1 s, so they are off.
    "mip_heuristic_run_rins": False,
    "mip_heuristic_run_rens": False,
    "mip_heuristic_run_root_reduced_cost": False,
    "mip_heuristic_run_feasibility_jump": False,
}


def _mip(model: _Model, h, upper, start, deadline):
    """Branch and bound (y integer, x continuous) under the column upper bounds `upper`,
    started from the plan `start`, until `deadline`.
    Returns (proven optimal, objective value, x of the best solution found or None)."""
    import highspy
    import numpy as np

    model.set_columns(h, model.lower, upper)
    for name, value in MIP_OPTIONS.items():
        h.setOptionValue(name, value)
    h.setSolution(_highs_solution(start))
    if not model.run(h, deadline):
        return False, math.inf, None
    proven = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    info = h.getInfo()
    if info.primal_solution_status != highspy.SolutionStatus.kSolutionStatusFeasible:
        return False, math.inf, None
    value = info.objective_function_value
    col_value = np.asarray(h.getSolution().col_value)
    x = model.integral(col_value)
    if x is None:
        x = _resolve_x(model, h, col_value, upper, deadline)
    return proven, value, x


def _tol(v: float) -> float:
    return 1e-9 * max(1.0, abs(v))


def _highs_solution(values):
    import highspy

    s = highspy.HighsSolution()
    s.col_value = values
    s.value_valid = True
    return s


def _resolve_x(model: _Model, h, col_value, upper, deadline):
    """Integral x for the y of a MILP solution: with y fixed the LP's vertices are integral."""
    import highspy
    import numpy as np

    y = model.ycol[model.ycol >= 0]
    lower, fixed = model.lower.copy(), upper.copy()
    lower[y] = fixed[y] = np.rint(col_value[y])
    model.set_columns(h, lower, fixed, y_integer=False)
    if not model.run(h, deadline) or h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    return model.integral(h.getSolution().col_value)


def _tie_break(model: _Model, h, best, rank, deadline):
    """Among the plans costing at most `best` (+ round-off), the one with the fewest
    rank-weighted units.  All columns are integer here: the extra cost row breaks the
    transportation structure that makes x integral by itself."""
    import highspy
    import numpy as np

    n = model.nvar
    model.set_columns(h, model.lower, model.upper, x_integer=True)
    nz = np.nonzero(model.cost)[0].astype(np.int32)
    h.addRow(-np.inf, best + _tol(best), len(nz), nz, model.cost[nz])
    weights = np.zeros(n)
    weights[: model.nx] = [rank[model.wids[w]] + 1 for w in model.cw]
    h.changeColsCost(n, np.arange(n, dtype=np.int32), weights)
    for name, value in MIP_OPTIONS.items():
        h.setOptionValue(name, value)
    feasible = highspy.SolutionStatus.kSolutionStatusFeasible
    if not model.run(h, deadline) or h.getInfo().primal_solution_status != feasible:
        return None
    x = model.integral(h.getSolution().col_value)
    return None if x is None else model.lines(x, rank)


def _ties_possible(candidates, unit) -> bool:
    """Two warehouses with the same unit cost (to 1e-9) could swap units at equal total cost."""
    costs = sorted(unit[c.warehouse_id] for c in candidates if c.remaining_capacity > 0)
    return any(b - a <= 1e-9 * max(1.0, abs(b)) for a, b in zip(costs, costs[1:]))


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
    started = time.perf_counter()
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
        _check_positions(candidates)
        lines, optimal = _cost_optimize(items, candidates, stock, preferred, customer, time_limit, started)
    else:
        order = _greedy_order(strategy, candidates, preferred, customer)
        lines, optimal = _fill_or_raise(items, order, stock).lines(items), True
    return Plan(strategy, lines, plan_cost(lines, candidates, customer), optimal)
