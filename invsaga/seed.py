"""``invsaga seed FILE``: warehouses and stock levels from a YAML file (SPEC §8).

The whole file is parsed and checked before the first call, so a typo never leaves a half
seeded mesh; every problem is reported with the entry it is in (``stock[12] (WH-XA-01/SKU-007):
on_hand: must be ≥ 0``). Loading is idempotent: warehouses are upserted by id, stock levels are
set (not added), and each stock row adds its SKU to its warehouse's assortment without
removing SKUs the warehouse already carries.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.runtime.channels import open_channel
from invsaga.warehouse.v1 import warehouse_pb2, warehouse_pb2_grpc

MAX_ID = 64
MAX_TEXT = 256
CALLS_IN_FLIGHT = 32
CALL_TIMEOUT = 30.0

STATUSES = {
    "active": common_pb2.WAREHOUSE_STATUS_ACTIVE,
    "maintenance": common_pb2.WAREHOUSE_STATUS_MAINTENANCE,
    "closed": common_pb2.WAREHOUSE_STATUS_CLOSED,
}
WAREHOUSE_KEYS = {"id", "name", "address", "lat", "lon", "capacity", "status", "priority", "cost"}
COST_KEYS = {"per_unit", "per_km_unit", "per_shipment"}
STOCK_KEYS = {"warehouse", "sku", "product_id", "on_hand", "bin"}


class SeedError(Exception):
    """The seed file is unreadable or invalid, or the mesh refused part of it."""


@dataclass(frozen=True)
class Seed:
    warehouses: tuple[common_pb2.Warehouse, ...]
    stock: tuple[inventory_pb2.SetStockRequest, ...]

    def assortment(self) -> dict[str, list[str]]:
        """Per warehouse, the SKUs its stock rows name, in file order."""
        skus: dict[str, list[str]] = {w.warehouse_id: [] for w in self.warehouses}
        for row in self.stock:
            if row.sku not in skus[row.warehouse_id]:
                skus[row.warehouse_id].append(row.sku)
        return skus

    def summary(self) -> str:
        return f"{_count(len(self.warehouses), 'warehouse')}, {_count(len(self.stock), 'stock row')}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class _Entry:
    """Reads the fields of one mapping in the file, collecting every problem with its place."""

    def __init__(self, where: str, data: Any, allowed: set[str], problems: list[str]) -> None:
        self.where = where
        self.problems = problems
        self.data: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        if not isinstance(data, Mapping):
            self.fail("", f"expected a mapping, got {_kind(data)}")
        for key in self.data:
            if key not in allowed:
                self.fail(str(key), f"unknown field (expected one of {', '.join(sorted(allowed))})")

    def fail(self, key: str, problem: str) -> None:
        self.problems.append(f"{self.where}: {key + ': ' if key else ''}{problem}")

    def text(self, key: str, *, required: bool, limit: int = MAX_TEXT) -> str:
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                self.fail(key, "required")
            return ""
        if not isinstance(value, str):
            self.fail(key, f"expected text, got {_kind(value)}")
            return ""
        if len(value) > limit:
            self.fail(key, f"at most {limit} characters")
        return value

    def integer(self, key: str, *, required: bool, minimum: int | None = None) -> int:
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail(key, "required")
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected a whole number, got {_kind(value)}")
            return 0
        if minimum is not None and value < minimum:
            self.fail(key, f"must be ≥ {minimum}, got {value}")
        return value

    def number(self, key: str, *, low: float | None = None, high: float | None = None) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(key, f"expected a number, got {_kind(value)}")
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(key, f"must be within [{low:g}, {high:g}], got {value}")
        return float(value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float, str)):
        return repr(value)
    return type(value).__name__


def _warehouse(index: int, data: Any, problems: list[str]) -> common_pb2.Warehouse:
    label = data.get("id") if isinstance(data, Mapping) else None
    entry = _Entry(f"warehouses[{index}]" + (f" ({label})" if label else ""), data, WAREHOUSE_KEYS, problems)
    warehouse = common_pb2.Warehouse(
        warehouse_id=entry.text("id", required=True, limit=MAX_ID),
        name=entry.text("name", required=True),
        location=common_pb2.Location(address=entry.text("address", required=False)),
        capacity=entry.integer("capacity", required=True, minimum=0),
        priority=entry.integer("priority", required=False),
    )
    lat = entry.number("lat", low=-90, high=90)
    lon = entry.number("lon", low=-180, high=180)
    if ("lat" in entry.data) != ("lon" in entry.data):
        entry.fail("lat/lon", "give both or neither")
    elif lat is not None and lon is not None:
        warehouse.location.lat, warehouse.location.lon = lat, lon
    status = entry.data.get("status", "active")
    if not isinstance(status, str) or status not in STATUSES:
        entry.fail("status", f"expected one of {', '.join(STATUSES)}, got {_kind(status)}")
    else:
        warehouse.status = STATUSES[status]
    if "cost" in entry.data:
        cost = _Entry(f"{entry.where}.cost", entry.data["cost"], COST_KEYS, problems)
        for name in sorted(COST_KEYS):
            value = cost.number(name, low=0, high=math.inf)
            if value is not None:
                setattr(warehouse.cost, name, value)
    return warehouse


def _stock_row(index: int, data: Any, problems: list[str]) -> inventory_pb2.SetStockRequest:
    label = ""
    if isinstance(data, Mapping):
        label = "/".join(str(data[k]) for k in ("warehouse", "sku") if data.get(k) is not None)
    entry = _Entry(f"stock[{index}]" + (f" ({label})" if label else ""), data, STOCK_KEYS, problems)
    return inventory_pb2.SetStockRequest(
        warehouse_id=entry.text("warehouse", required=True, limit=MAX_ID),
        sku=entry.text("sku", required=True),
        product_id=entry.text("product_id", required=False),
        on_hand=entry.integer("on_hand", required=True, minimum=0),
        bin=entry.text("bin", required=False, limit=MAX_ID),
    )


def _list(data: Mapping[str, Any], key: str, problems: list[str]) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{key}: expected a list, got {_kind(value)}")
        return []
    return value


def parse_seed(data: Any) -> Seed:
    """Check a parsed seed document; raises ``SeedError`` listing every problem found."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise SeedError(f"expected a mapping with 'warehouses' and 'stock', got {_kind(data)}")
    for key in data:
        if key not in ("warehouses", "stock"):
            problems.append(f"{key}: unknown section (expected warehouses and stock)")
    warehouses = [_warehouse(i, w, problems) for i, w in enumerate(_list(data, "warehouses", problems))]
    stock = [_stock_row(i, s, problems) for i, s in enumerate(_list(data, "stock", problems))]

    seen: dict[str, int] = {}
    for i, w in enumerate(warehouses):
        if w.warehouse_id and w.warehouse_id in seen:
            problems.append(
                f"warehouses[{i}] ({w.warehouse_id}): duplicate id (first at warehouses[{seen[w.warehouse_id]}])"
            )
        seen.setdefault(w.warehouse_id, i)
    rows: dict[tuple[str, str], int] = {}
    for i, row in enumerate(stock):
        where = f"stock[{i}] ({row.warehouse_id}/{row.sku})"
        if row.warehouse_id and row.warehouse_id not in seen:
            problems.append(f"{where}: unknown warehouse {row.warehouse_id!r} (not under warehouses)")
        key = (row.warehouse_id, row.sku)
        if row.warehouse_id and row.sku and key in rows:
            problems.append(f"{where}: duplicate stock row (first at stock[{rows[key]}])")
        rows.setdefault(key, i)
    if not warehouses and not stock and not problems:
        problems.append("nothing to seed: no warehouses and no stock")
    if problems:
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise SeedError("invalid seed:\n  " + "\n  ".join(shown) + more)
    return Seed(tuple(warehouses), tuple(stock))


def load_seed(path: str | Path) -> Seed:
    """Read and check a seed file (SPEC §8)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SeedError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SeedError(f"{path}: not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SeedError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_seed(data)
    except SeedError as err:
        raise SeedError(f"{path}: {err}") from None


Call = tuple[str, Callable[..., Awaitable[Any]], Any]  # what it does (for an error), the RPC, the request


async def _bounded(calls: Iterable[Call], limit: int = CALLS_IN_FLIGHT) -> None:
    """Make the calls concurrently, at most ``limit`` at once; after the first failure the
    calls not yet started are skipped and the failure is raised once the started ones end.

    Started calls are let finish rather than cancelled: a cancelled RPC is abandoned by the
    client while the server may still be inside its transaction.
    """
    gate = asyncio.Semaphore(limit)
    failures: list[SeedError] = []

    async def one(what: str, rpc: Callable[..., Awaitable[Any]], request: Any) -> None:
        async with gate:
            if failures:
                return
            try:
                await rpc(request, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as err:
                failures.append(SeedError(f"{what}: {err.code().name}: {err.details()}"))

    await asyncio.gather(*(one(*call) for call in calls))
    if failures:
        raise failures[0]


Connect = Callable[[str], grpc.aio.Channel]


async def apply_seed(seed: Seed, warehouse_addr: str, inventory_addr: str, connect: Connect = open_channel) -> str:
    """Upsert the warehouses, extend their assortments and set the stock levels.

    ``connect`` opens the channel to an address (plaintext without a token by default; the
    ``invsaga seed`` command passes its TLS files and token)."""
    async with connect(warehouse_addr) as wh_channel, connect(inventory_addr) as inv_channel:
        warehouses = warehouse_pb2_grpc.WarehouseServiceStub(wh_channel)
        inventory = inventory_pb2_grpc.InventoryServiceStub(inv_channel)
        # The upsert carries no SKUs, so a warehouse keeps what it already carries.
        await _bounded(
            (
                f"warehouse {w.warehouse_id} (at {warehouse_addr})",
                warehouses.UpsertWarehouse,
                warehouse_pb2.UpsertWarehouseRequest(warehouse=w),
            )
            for w in seed.warehouses
        )
        add_skus: list[Call] = [
            (
                f"assortment of {wid} (at {warehouse_addr})",
                warehouses.AddAssortment,
                warehouse_pb2.AddAssortmentRequest(warehouse_id=wid, skus=skus),
            )
            for wid, skus in seed.assortment().items()
            if skus
        ]
        set_stock: list[Call] = [
            (f"stock {row.warehouse_id}/{row.sku} (at {inventory_addr})", inventory.SetStock, row) for row in seed.stock
        ]
        await _bounded([*add_skus, *set_stock])
    return seed.summary()


async def seed_file(path: str | Path, warehouse_addr: str, inventory_addr: str, connect: Connect = open_channel) -> str:
    """Load ``path`` into the warehouse and inventory services; returns a one-line summary."""
    return await apply_seed(load_seed(path), warehouse_addr, inventory_addr, connect)
