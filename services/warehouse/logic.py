"""Warehouse rules: input validation and the candidates QueryWarehouses returns, in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from invsaga.common.v1 import common_pb2
from invsaga.runtime.errors import Violations
from invsaga.warehouse.v1 import warehouse_pb2 as pb
from services.common import MAX_TEXT, check_id, check_length, db_names

MAX_CAPACITY = 1_000_000_000_000  # units; a BIGINT column, summed with locked units
MAX_COST = 1e12
MAX_SKUS = 100_000

STATUS_TO_DB = db_names(common_pb2.WarehouseStatus)
STATUS_FROM_DB = {v: k for k, v in STATUS_TO_DB.items()}


def validate_transfer(t: pb.ValidateTransferInput) -> None:
    v = Violations()
    for name in ("from_warehouse", "to_warehouse"):
        check_id(v, f"validate_transfer.{name}", getattr(t, name))
    if t.from_warehouse and t.from_warehouse == t.to_warehouse:
        v.add("validate_transfer.to_warehouse", "must differ from from_warehouse")
    if not t.skus or len(t.skus) > 1000:
        v.add("validate_transfer.skus", "1 to 1000 SKUs")
    if any(not sku or len(sku) > MAX_TEXT for sku in t.skus):
        v.add("validate_transfer.skus", f"each 1 to {MAX_TEXT} characters")
    v.raise_if_any("invalid transfer")


def validate_warehouse(w: common_pb2.Warehouse) -> None:
    v = Violations()
    check_id(v, "warehouse.warehouse_id", w.warehouse_id)
    check_id(v, "warehouse.name", w.name, limit=MAX_TEXT)
    check_id(v, "warehouse.location.address", w.location.address, limit=MAX_TEXT, required=False)
    if w.capacity < 0:
        v.add("warehouse.capacity", "must be ≥ 0")
    elif w.capacity > MAX_CAPACITY:
        v.add("warehouse.capacity", f"must be ≤ {MAX_CAPACITY:,}")
    if w.status not in STATUS_TO_DB:
        v.add("warehouse.status", "must be ACTIVE, MAINTENANCE or CLOSED")
    if w.location.HasField("lat") != w.location.HasField("lon"):
        v.add("warehouse.location", "lat and lon go together")
    for name, bound in (("lat", 90), ("lon", 180)):
        if w.location.HasField(name) and not -bound <= getattr(w.location, name) <= bound:
            v.add(f"warehouse.location.{name}", f"must be within [-{bound}, {bound}]")
    for name in ("per_unit", "per_km_unit", "per_shipment"):
        if not 0 <= getattr(w.cost, name) <= MAX_COST:  # NaN and infinity too
            v.add(f"warehouse.cost.{name}", f"must be within 0..{MAX_COST:g}")
    if len(w.skus) > MAX_SKUS:
        v.add("warehouse.skus", f"at most {MAX_SKUS:,} SKUs")
    for i, sku in enumerate(w.skus):
        check_length(v, f"warehouse.skus[{i}]", sku, MAX_TEXT)
    v.raise_if_any("invalid warehouse")


def validate_assortment(request: pb.AddAssortmentRequest) -> None:
    v = Violations()
    check_id(v, "warehouse_id", request.warehouse_id)
    if not request.skus:
        v.add("skus", "at least one SKU")
    elif len(request.skus) > MAX_SKUS:
        v.add("skus", f"at most {MAX_SKUS:,} SKUs")
    for i, sku in enumerate(request.skus[:MAX_SKUS]):
        check_length(v, f"skus[{i}]", sku, MAX_TEXT)
    v.raise_if_any("invalid assortment")


def order_candidates(
    warehouses: Sequence[common_pb2.Warehouse], preferred: Sequence[str]
) -> list[common_pb2.Warehouse]:
    """Preferred warehouses first in the order given, then by priority descending, then id."""
    rank = {wid: i for i, wid in enumerate(dict.fromkeys(preferred))}
    return sorted(warehouses, key=lambda w: (rank.get(w.warehouse_id, len(rank)), -w.priority, w.warehouse_id))


@dataclass(frozen=True)
class Carrier:
    """An active warehouse of the catalog and the SKUs it carries."""

    warehouse: common_pb2.Warehouse  # without its SKUs
    skus: frozenset[str]


def fill_candidates(
    out: pb.QueryWarehousesOutput, active: Sequence[Carrier], wanted: set[str], preferred: Sequence[str]
) -> None:
    """Fill ``out`` with the active warehouses carrying any of ``wanted``, in candidate order,
    each listing only the wanted SKUs it carries (all that later steps look at)."""
    carriers = {c.warehouse.warehouse_id: c for c in active if not c.skus.isdisjoint(wanted)}
    for warehouse in order_candidates([c.warehouse for c in carriers.values()], preferred):
        added = out.warehouses.add()
        added.CopyFrom(warehouse)
        added.skus.extend(sorted(carriers[warehouse.warehouse_id].skus & wanted))
