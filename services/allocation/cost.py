"""COST_OPTIMIZE (SPEC §3): the minimum-cost plan, exactly, under a wall-clock cap.

The MILP is solved with HiGHS (``highspy``): LP relaxation, a local search and a restricted
MILP for a good plan, reduced-cost fixing against that plan, then branch and bound on what is
left. If the cap is hit the best plan found is returned with ``optimal=False``; see
``_cost_optimize``. ``strategies.allocate`` is the entry point.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

# numpy and HiGHS load with this module, which only a COST_OPTIMIZE plan imports (``strategies.allocate``).
import highspy
import numpy as np

from services.allocation.strategies import (
    Candidate,
    PlanLine,
    _distance,
    _fill_or_raise,
    _order,
    _stock_of,
    _unit_cost,
    plan_cost,
)
from services.allocation.milp import MIP_INTEGRALITY, _Model, _mip, _tie_break, _ties_possible, _tol, _valid


def _check_positions(candidates: Sequence[Candidate]) -> None:
    for c in candidates:
        if c.per_km_unit and (c.lat is None or c.lon is None):
            raise ValueError(f"warehouse {c.warehouse_id!r} has a per-km cost but no coordinates")


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
            # HiGHS accepts a y within its integrality tolerance (1e-6) of 0 or 1, so the value it
            # proves may sit up to 1e-6 of a shipment charge below the integral plan's cost.
            slack = _tol(value) + MIP_INTEGRALITY * sum(c.per_shipment for c in candidates)
            optimal = proven and best <= value + slack
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
