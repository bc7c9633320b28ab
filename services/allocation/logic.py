"""Allocation rules around the pure strategies: input checks, candidates, expiry, statuses.

Everything here is plain data in, plain data out; ``server.py`` adapts it to gRPC and the
tables, ``strategies.py`` does the planning itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping, Sequence

from invsaga.allocation.v1 import allocation_pb2 as pb
from invsaga.common.v1 import common_pb2
from invsaga.runtime.convert import from_timestamp
from invsaga.runtime.errors import Violations
from services.allocation.strategies import Candidate, Demand
from services.common import MAX_LINES, check_count, check_id, check_length, db_names, fields, totals

MAX_TEXT = 256
MAX_QUANTITY = 1_000_000

# Strategies are stored by their names in upper case ("PRIORITY"); UNSPECIFIED is PRIORITY, the seed's default.
STRATEGY_VALUES = {name.upper(): value for value, name in db_names(common_pb2.AllocationStrategy).items()}
STRATEGY_NAMES = {common_pb2.ALLOCATION_STRATEGY_UNSPECIFIED: "PRIORITY", **{v: k for k, v in STRATEGY_VALUES.items()}}

STATUS_TO_DB = db_names(common_pb2.AllocationStatus)
STATUS_FROM_DB = {v: k for k, v in STATUS_TO_DB.items()}


def validate_input(data: pb.AllocateInventoryInput) -> None:
    """INVALID_ARGUMENT with every field violation of an AllocateInventory input."""
    v = Violations()
    check_count(v, "allocate_inventory.items", len(data.items), "item")
    for i, item in enumerate(data.items[:MAX_LINES]):
        check_length(v, f"allocate_inventory.items[{i}].sku", item.sku, MAX_TEXT)
        if not 0 < item.quantity <= MAX_QUANTITY:
            v.add(f"allocate_inventory.items[{i}].quantity", f"must be within 1..{MAX_QUANTITY}")
    if data.strategy not in STRATEGY_NAMES:
        v.add("allocate_inventory.strategy", "unknown allocation strategy")
    check_id(v, "allocate_inventory.order_id", data.order_id, limit=MAX_TEXT, required=False)
    location = data.customer_location
    if location.HasField("lat") != location.HasField("lon"):
        v.add("allocate_inventory.customer_location", "lat and lon go together")
    elif location.HasField("lat") and not (-90 <= location.lat <= 90 and -180 <= location.lon <= 180):
        v.add("allocate_inventory.customer_location", "lat within [-90, 90], lon within [-180, 180]")
    check_id(v, "allocate_inventory.customer_location.address", location.address, limit=MAX_TEXT, required=False)
    seen: set[str] = set()
    for i, w in enumerate(data.warehouses):
        if not w.warehouse_id:
            v.add(f"allocate_inventory.warehouses[{i}].warehouse_id", "required")
        elif w.warehouse_id in seen:
            v.add(f"allocate_inventory.warehouses[{i}].warehouse_id", "duplicate warehouse")
        seen.add(w.warehouse_id)
        if w.capacity < 0:
            v.add(f"allocate_inventory.warehouses[{i}].capacity", "must be ≥ 0")
    for i, s in enumerate(data.stock):
        if s.available < 0:
            v.add(f"allocate_inventory.stock[{i}].available", "must be ≥ 0")
    v.raise_if_any("invalid allocation input")


@dataclass(frozen=True)
class Problem:
    """The strategy call an AllocateInventory input stands for."""

    strategy: str
    demands: tuple[Demand, ...]
    candidates: tuple[Candidate, ...]
    stock: dict[tuple[str, str], int]
    preferred: tuple[str, ...]


def build_problem(data: pb.AllocateInventoryInput) -> Problem:
    """Candidates from step 1's warehouses, available stock and locked units from step 2."""
    locked = totals((load.warehouse_id, load.locked_units) for load in data.loads)
    stock = totals(((level.warehouse_id, level.sku), level.available) for level in data.stock)
    candidates = tuple(
        Candidate(
            **fields(w, "warehouse_id priority capacity"),
            **fields(w.cost, "per_unit per_km_unit per_shipment"),
            locked_units=locked.get(w.warehouse_id, 0),
            lat=w.location.lat if w.location.HasField("lat") else None,
            lon=w.location.lon if w.location.HasField("lon") else None,
        )
        for w in data.warehouses
    )
    return Problem(
        strategy=STRATEGY_NAMES[data.strategy],
        demands=tuple(Demand(item.sku, item.quantity) for item in data.items),
        candidates=candidates,
        stock=stock,
        preferred=tuple(data.preferred_warehouses),
    )


def customer_location(data: pb.AllocateInventoryInput) -> tuple[float, float] | str | None:
    """The customer's coordinates; else the address to resolve, when the input has no
    coordinates but names a place; else None."""
    location = data.customer_location
    if location.HasField("lat") and location.HasField("lon"):
        return (location.lat, location.lon)
    if location.HasField("lat"):
        return None
    return location.address.strip() or None


def expires_at(data: pb.AllocateInventoryInput, now: datetime, ttl_seconds: float) -> datetime:
    """``min(now + ttl, requested expiry)`` (SPEC §4)."""
    default = now + timedelta(seconds=ttl_seconds)
    if not data.HasField("expires_at"):
        return default
    return min(default, from_timestamp(data.expires_at))


def shortage_metadata(shortages: Sequence[tuple[str, int, int]]) -> dict[str, str]:
    """ErrorInfo metadata carrying the shortages of a failed allocation.

    ErrorInfo metadata is a flat string map, so the list travels as one JSON value under
    ``shortages`` whose objects have the fields of ``invsaga.common.v1.Shortage``; the
    coordinator turns it into ``SagaFailure.shortages`` with :func:`parse_shortage_metadata`.
    """
    return {
        "shortages": json.dumps(
            [{"sku": sku, "required": required, "available": available} for sku, required, available in shortages],
            ensure_ascii=False,
            separators=(",", ":"),
        )
    }


def parse_shortage_metadata(metadata: Mapping[str, str]) -> list[common_pb2.Shortage]:
    """The shortages an allocation failure carries (empty when there are none)."""
    raw = metadata.get("shortages")
    if not raw:
        return []
    return [
        common_pb2.Shortage(sku=s["sku"], required=s["required"], available=s["available"]) for s in json.loads(raw)
    ]
