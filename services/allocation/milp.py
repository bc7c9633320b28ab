"""The COST_OPTIMIZE MILP over numpy arrays, solved with HiGHS (``highspy``); see ``cost``."""

from __future__ import annotations

import math
import time

# numpy and HiGHS load with this module, which only a COST_OPTIMIZE plan imports (``strategies.allocate``).
import highspy
import numpy as np

from services.allocation.strategies import PlanLine, _stock_of


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
        self.items = items
        n_items = len(items)
        q = np.array([qty for _, qty in items], dtype=float)
        self.item_index = item_index = {sku: i for i, (sku, _) in enumerate(items)}
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
        triplets = [(ci, np.arange(nx), np.ones(nx))]
        lo, hi = [q], [q]
        n_rows = n_items
        # capacity rows: with y always (they double as Σ x ≤ reach·y); without y only where room binds
        cap_w = np.nonzero(has_y | (reach > self.room))[0]
        cap_row = np.full(n_w, -1, dtype=np.int64)
        cap_row[cap_w] = n_rows + np.arange(len(cap_w))
        sel = cap_row[cw] >= 0
        yw = cap_w[has_y[cap_w]]
        triplets.append((cap_row[cw[sel]], np.nonzero(sel)[0], np.ones(int(sel.sum()))))
        triplets.append((cap_row[yw], ycol[yw], -np.minimum(self.room[yw], reach[yw])))
        lo.append(np.full(len(cap_w), -np.inf))
        hi.append(np.where(has_y[cap_w], 0.0, self.room[cap_w]))
        n_rows += len(cap_w)
        # linking rows x[w,i] - ub·y[w] ≤ 0 where w has y and more than one column
        link = np.nonzero(has_y[cw] & (per_w[cw] > 1))[0]
        link_row = n_rows + np.arange(len(link))
        triplets += [(link_row, link, np.ones(len(link))), (link_row, ycol[cw[link]], -xub[link])]
        lo.append(np.full(len(link), -np.inf))
        hi.append(np.zeros(len(link)))
        n_rows += len(link)
        rows, cols, vals = (np.concatenate(part) for part in zip(*triplets))
        order = np.argsort(rows, kind="stable")
        self.n_rows = n_rows
        self.a_index = cols[order].astype(np.int32)
        self.a_value = vals[order]
        self.a_start = np.searchsorted(rows[order], np.arange(n_rows + 1)).astype(np.int32)
        self.row_lo = np.concatenate(lo)
        self.row_hi = np.concatenate(hi)

    # ---------------------------------------------------------------------------- HiGHS

    def highs(self):
        """A HiGHS instance holding the LP relaxation.  Each `run` stops at its own time
        (perf_counter) through HiGHS's interrupt callbacks as well as its time limit: HiGHS
        looks at its clock only now and then, the callbacks come every simplex iteration."""
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
        kind = {False: highspy.HighsVarType.kContinuous, True: highspy.HighsVarType.kInteger}
        idx = np.arange(self.nvar, dtype=np.int32)
        h.changeColsBounds(self.nvar, idx, lower, upper)
        h.changeColsIntegrality(self.nvar, idx, np.array([kind[x_integer]] * self.nx + [kind[y_integer]] * self.ny))

    def live_warehouses(self, upper):
        """Warehouses that may still ship under the column upper bounds `upper`."""
        ship = np.zeros(self.n_w, dtype=bool)
        ship[self.cw[upper[: self.nx] > 0]] = True
        has_y = self.ycol >= 0
        ship[has_y] &= upper[self.ycol[has_y]] > 0
        return np.nonzero(ship)[0]

    # ---------------------------------------------------------------------------- plans

    def columns(self, x_wi):
        """(n_w × n_items) units -> column vector with y = 1 where a warehouse ships."""
        v = np.zeros(self.nvar)
        v[: self.nx] = x_wi[self.cw, self.ci]
        used = x_wi.sum(axis=1) > 0
        v[self.ycol[used & (self.ycol >= 0)]] = 1.0
        return v

    def from_lines(self, lines):
        w_index = {w: k for k, w in enumerate(self.wids)}
        x = np.zeros((self.n_w, len(self.items)))
        for ln in lines:
            x[w_index[ln.warehouse_id], self.item_index[ln.sku]] += ln.quantity
        return x

    def integral(self, col_value):
        """x part of a HiGHS solution as an (n_w × n_items) integer matrix, or None when it is
        not integral or misses an item's quantity."""
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


MIP_INTEGRALITY = 1e-6  # HiGHS's mip_feasibility_tolerance (its default), set below
MIP_OPTIONS = {
    "mip_feasibility_tolerance": MIP_INTEGRALITY,
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
    s = highspy.HighsSolution()
    s.col_value = values
    s.value_valid = True
    return s


def _resolve_x(model: _Model, h, col_value, upper, deadline):
    """Integral x for the y of a MILP solution: with y fixed the LP's vertices are integral."""
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
