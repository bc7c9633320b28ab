"""Picklist rules: input checks, one picklist per warehouse in pick order, status transitions.

Plain functions, no gRPC or database: ``server.py`` adapts them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from invsaga.common.v1 import common_pb2
from invsaga.logistics.v1 import logistics_pb2 as pb
from invsaga.runtime.errors import Violations
from services.common import MAX_LINES, MAX_QUANTITY, MAX_TEXT, check_count, check_id, check_length, db_names


PENDING, PROCESSING, COMPLETED, CANCELLED = "pending", "processing", "completed", "cancelled"

STATUS_TO_DB = db_names(common_pb2.PicklistStatus)
STATUS_FROM_DB = {v: k for k, v in STATUS_TO_DB.items()}
KIND_TO_DB = db_names(common_pb2.PicklistKind)
KIND_FROM_DB = {v: k for k, v in KIND_TO_DB.items()}

# SPEC §4: PENDING -> PROCESSING -> COMPLETED, or CANCELLED from either of the first two.
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({PROCESSING, CANCELLED}),
    PROCESSING: frozenset({COMPLETED, CANCELLED}),
    COMPLETED: frozenset(),
    CANCELLED: frozenset(),
}

# What the inventory service must do with the picklist's locks when it enters a status.
HOLD, COMMIT, RELEASE = "hold", "commit", "release"
INVENTORY_ACTION = {PROCESSING: HOLD, COMPLETED: COMMIT, CANCELLED: RELEASE}


def transition_allowed(current: str, target: str) -> bool:
    return target in TRANSITIONS[current]


@dataclass(frozen=True)
class PickLine:
    sku: str
    quantity: int
    bin: str
    sequence: int


@dataclass(frozen=True)
class PickPlan:
    """The lines of one warehouse's picklist, in walking order."""

    warehouse_id: str
    lines: tuple[PickLine, ...]


_CHUNKS = re.compile(r"(\d+)")


def bin_order(bin_code: str) -> tuple:
    """Sort key of a bin code: aisle/rack/shelf segments compared naturally ("A-2" < "A-10").

    Lines with no bin sort last: they have to be looked for, so the picker walks the known
    locations first.
    """
    code = bin_code.strip().upper()
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _CHUNKS.split(code) if p)
    return (not code, parts)


def validate_input(data: pb.GeneratePicklistInput) -> None:
    """INVALID_ARGUMENT with every field violation of a GeneratePicklist input."""
    v = Violations()
    if data.kind and data.kind not in KIND_TO_DB:
        v.add("generate_picklist.kind", f"unknown picklist kind {data.kind}")
    check_count(v, "generate_picklist.lines", len(data.lines), "line")
    for i, line in enumerate(data.lines[:MAX_LINES]):
        check_length(v, f"generate_picklist.lines[{i}].warehouse_id", line.warehouse_id, 64)
        check_length(v, f"generate_picklist.lines[{i}].sku", line.sku, MAX_TEXT)
        if not 0 < line.quantity <= MAX_QUANTITY:
            v.add(f"generate_picklist.lines[{i}].quantity", f"must be within 1..{MAX_QUANTITY}")
        check_id(v, f"generate_picklist.lines[{i}].bin", line.bin, required=False)
    # 0 means the request named no priority; the coordinator otherwise passes 1..10.
    if not 0 <= data.priority <= 10:
        v.add("generate_picklist.priority", "must be within 1..10")
    check_id(v, "generate_picklist.order_id", data.order_id, limit=MAX_TEXT, required=False)
    v.raise_if_any("invalid picklist input")


def plan_picklists(lines: Iterable[pb.PickRequestLine]) -> list[PickPlan]:
    """One picklist per warehouse (by warehouse id), its lines by bin then SKU, numbered 1..n.

    The same SKU twice for one warehouse becomes one line with the summed quantity (keeping the
    first bin given), so a picker never visits a shelf twice for one order.
    """
    merged: dict[str, dict[str, list]] = {}
    for line in lines:
        entry = merged.setdefault(line.warehouse_id, {}).setdefault(line.sku, [0, ""])
        entry[0] += line.quantity
        entry[1] = entry[1] or line.bin
    plans = []
    for warehouse_id in sorted(merged):
        ordered = sorted(merged[warehouse_id].items(), key=lambda kv: (bin_order(kv[1][1]), kv[0]))
        picks = tuple(PickLine(sku, qty, bin_code, i) for i, (sku, (qty, bin_code)) in enumerate(ordered, start=1))
        plans.append(PickPlan(warehouse_id, picks))
    return plans
