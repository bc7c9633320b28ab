"""All of the warehouse service's SQL: warehouses with their assortments, and the catalog of
active ones that QueryWarehouses answers from, kept in memory."""

from __future__ import annotations

import builtins

from invsaga.common.v1 import common_pb2
from invsaga.runtime.barrier import COMPENSATE, EXECUTE, Barrier, Effect, Reader, Refused
from invsaga.runtime.convert import to_timestamp, utcnow
from invsaga.runtime.db import Database
from invsaga.runtime.errors import FailedPrecondition
from invsaga.warehouse.v1 import warehouse_pb2 as pb
from services.common import fields, found
from services.warehouse import logic

_SELECT = (
    "SELECT w.*, ARRAY(SELECT sku FROM assortment a WHERE a.warehouse_id = w.warehouse_id) AS skus FROM warehouses w"
)
_ONE = f"{_SELECT} WHERE w.warehouse_id = %(warehouse_id)s"
_PAGE = " ORDER BY w.warehouse_id OFFSET %(offset)s LIMIT %(limit)s"
_ALL = _SELECT + _PAGE
_WITH_STATUS = f"{_SELECT} WHERE w.status = %(status)s{_PAGE}"

_FIELDS = (
    "name", "address", "lat", "lon", "capacity", "status", "priority",
    "per_unit", "per_km_unit", "per_shipment", "updated_at",
)  # fmt: skip
_UPSERT = (
    f"INSERT INTO warehouses (warehouse_id, {', '.join(_FIELDS)})"
    f" VALUES (%(warehouse_id)s, {', '.join(f'%({f})s' for f in _FIELDS)})"
    f" ON CONFLICT (warehouse_id) DO UPDATE SET {', '.join(f'{f} = EXCLUDED.{f}' for f in _FIELDS)}"
)
_CLEAR_ASSORTMENT = "DELETE FROM assortment WHERE warehouse_id = %(warehouse_id)s"
# Adds nothing to a warehouse that does not exist (which then is not found).
_ADD_ASSORTMENT = (
    "INSERT INTO assortment (warehouse_id, sku) SELECT warehouse_id, unnest(%(skus)s::text[])"
    " FROM warehouses WHERE warehouse_id = %(warehouse_id)s ON CONFLICT DO NOTHING"
)

# ValidateTransfer's writes: the SKUs join the destination's assortment, and the catalog's
# version moves on only when one did.
_JOIN_ASSORTMENT = (
    "joined AS (INSERT INTO assortment (warehouse_id, sku) SELECT %(to_warehouse)s, unnest(%(skus)s::text[])"
    " ON CONFLICT DO NOTHING RETURNING sku),"
    " bumped AS (UPDATE catalog_version SET version = version + 1 WHERE id = 1 AND EXISTS (SELECT 1 FROM joined))"
)
_BOTH = f"{_SELECT} WHERE w.warehouse_id = ANY(%(ids)s::text[])"

_VERSION = "SELECT version FROM catalog_version WHERE id = 1"
_BUMP = "UPDATE catalog_version SET version = version + 1 WHERE id = 1"
# The guard of the Execute's barrier row: the catalog is still at the version the answer was
# built from (checked in the same statement, so it costs no round trip).
_SAME_VERSION = "NOT EXISTS (SELECT 1 FROM catalog_version WHERE id = 1 AND version <> %(catalog_version)s)"


def _to_proto(row) -> common_pb2.Warehouse:
    location = common_pb2.Location(address=row.address)
    if row.lat is not None and row.lon is not None:
        location.lat, location.lon = row.lat, row.lon
    return common_pb2.Warehouse(
        **fields(row, "warehouse_id name capacity priority"),
        location=location,
        status=logic.STATUS_FROM_DB[row.status],
        cost=common_pb2.CostModel(**fields(row, "per_unit per_km_unit per_shipment")),
        skus=sorted(row.skus),
        updated_at=to_timestamp(row.updated_at),
    )


class WarehouseStore:
    """Warehouses and assortments, and the catalog QueryWarehouses answers from.

    The catalog is the active warehouses with their assortments, kept in memory. Every write
    of the warehouses or assortment tables bumps ``catalog_version`` in its own transaction,
    after its other writes. An Execute answers from the catalog only if that row still holds
    the version the catalog was loaded at, as the guard of its barrier row
    (``_SAME_VERSION``): a catalog that moved refuses the Execute, which is answered again
    after a reload. So a write committed on any replica, this one included, is seen by every
    Execute that starts after the commit, exactly as when the tables were read on each call.
    The version is read before the tables: under READ COMMITTED a write committing in between
    makes the catalog newer than the version it is filed under, which costs one more reload
    and never keeps an old catalog.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.barrier = Barrier(db, pb.ExecuteResponse, pb.CompensateResponse)
        # The version and the catalog loaded at it, replaced together.
        self.catalog: tuple[int | None, tuple[logic.Carrier, ...]] = (None, ())

    async def get(self, warehouse_id: str) -> common_pb2.Warehouse:
        return _to_proto(found(await self.db.fetchone(_ONE, {"warehouse_id": warehouse_id}), "warehouse", warehouse_id))

    async def list(self, status: str, offset: int, limit: int) -> list[common_pb2.Warehouse]:
        """A page in warehouse id order, of those with ``status`` (all if empty)."""
        params = {"status": status, "offset": offset, "limit": limit}
        return [_to_proto(row) for row in await self.db.fetch(_WITH_STATUS if status else _ALL, params)]

    async def upsert(self, w: common_pb2.Warehouse) -> common_pb2.Warehouse:
        """Create or replace ``w``; its SKUs, if it lists any, replace the assortment."""
        values = {
            **fields(w, "warehouse_id name capacity priority"),
            "address": w.location.address,
            "lat": w.location.lat if w.location.HasField("lat") else None,
            "lon": w.location.lon if w.location.HasField("lon") else None,
            "status": logic.STATUS_TO_DB[w.status],
            **fields(w.cost, "per_unit per_km_unit per_shipment"),
            "updated_at": utcnow(),
        }
        assortment = {"warehouse_id": w.warehouse_id, "skus": list(w.skus)}
        replace = [(_CLEAR_ASSORTMENT, assortment), (_ADD_ASSORTMENT, assortment)] if w.skus else []
        return await self._write(w.warehouse_id, [(_UPSERT, values), *replace])

    # ``builtins.list`` below: in this class, ``list`` is the method above.
    async def add_assortment(self, warehouse_id: str, skus: builtins.list[str]) -> common_pb2.Warehouse:
        return await self._write(warehouse_id, [(_ADD_ASSORTMENT, {"warehouse_id": warehouse_id, "skus": skus})])

    async def _write(self, warehouse_id: str, writes: builtins.list[tuple[str, dict]]) -> common_pb2.Warehouse:
        """``writes`` and the catalog version's bump in one transaction; the warehouse as it then is."""
        async with self.db.transaction() as conn:
            for sql, params in writes:
                await conn.execute(sql, params)
            await conn.execute(_BUMP)
            row = await (await conn.execute(_ONE, {"warehouse_id": warehouse_id})).fetchone()
            found(row, "warehouse", warehouse_id)  # (and nothing is committed)
        return _to_proto(row)

    async def query_warehouses(self, ctx: common_pb2.StepContext, query: pb.QueryWarehousesInput) -> pb.ExecuteResponse:
        """The Execute of QueryWarehouses: the candidates of the current catalog, once per step."""
        wanted = set(query.skus)

        async def effect(reader: Reader) -> Effect[pb.ExecuteResponse]:
            version, active = self.catalog
            response = pb.ExecuteResponse()
            response.query_warehouses.SetInParent()  # the output is set even when nothing matches
            logic.fill_candidates(response.query_warehouses, active, wanted, query.preferred_warehouses)
            return Effect(response, params={"catalog_version": version}, guard=_SAME_VERSION)

        if self.catalog[0] is None:
            await self._reload()
        # Round again only if the catalog is written again in between: writes are rare.
        while True:
            try:
                return await self.barrier.run(ctx, EXECUTE, effect)
            except Refused:  # the catalog moved on: answer from the new one
                await self._reload()

    async def validate_transfer(self, ctx: common_pb2.StepContext, t: pb.ValidateTransferInput) -> pb.ExecuteResponse:
        """Both ends exist and are active; the destination then carries the SKUs. A refusal
        writes nothing (not even the barrier row): the saga rolls back on it."""

        async def effect(reader: Reader) -> Effect[pb.ExecuteResponse]:
            rows = {r.warehouse_id: r for r in await reader.fetch(_BOTH, {"ids": [t.from_warehouse, t.to_warehouse]})}
            for end, warehouse_id in (("from_warehouse", t.from_warehouse), ("to_warehouse", t.to_warehouse)):
                row = found(rows.get(warehouse_id), "warehouse", warehouse_id)
                if row.status != "active":
                    raise FailedPrecondition(
                        f"warehouse {warehouse_id!r} is {row.status}, not active",
                        reason="WAREHOUSE_NOT_ACTIVE",
                        metadata={"warehouse_id": warehouse_id, "status": row.status, "end": end},
                    )
            source, destination = _to_proto(rows[t.from_warehouse]), _to_proto(rows[t.to_warehouse])
            destination.skus[:] = sorted(set(destination.skus) | set(t.skus))
            out = pb.ValidateTransferOutput(source=source, destination=destination)
            params = {"to_warehouse": t.to_warehouse, "skus": list(dict.fromkeys(t.skus))}
            return Effect(pb.ExecuteResponse(validate_transfer=out), _JOIN_ASSORTMENT, params)

        response = await self.barrier.run(ctx, EXECUTE, effect)
        await self._reload()  # the destination's new SKUs show in QueryWarehouses at once
        return response

    async def _reload(self) -> None:
        """Load the catalog if the version has moved (or nothing is loaded yet)."""
        version = (await self.db.fetchone(_VERSION)).version
        if version != self.catalog[0]:
            active = []
            for row in await self.db.fetch(_WITH_STATUS, {"status": "active", "offset": 0, "limit": None}):
                warehouse = _to_proto(row)
                warehouse.ClearField("skus")
                active.append(logic.Carrier(warehouse, frozenset(row.skus)))
            self.catalog = (version, tuple(active))

    async def compensate(self, ctx: common_pb2.StepContext) -> pb.CompensateResponse:
        async def effect(reader: Reader) -> Effect[pb.CompensateResponse]:
            return Effect(pb.CompensateResponse())  # a query has nothing to undo

        return await self.barrier.run(ctx, COMPENSATE, effect)
