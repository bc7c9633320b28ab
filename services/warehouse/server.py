"""gRPC adapters of the warehouse service: thin wrappers over logic.py and the tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invsaga.common.v1 import common_pb2
from invsaga.runtime.barrier import (
    compensate_once,
    execute_once,
    execute_once_pg_statement,
    is_postgres,
)
from invsaga.runtime.config import Settings
from invsaga.runtime.convert import next_page_token, page_window, to_timestamp, utcnow
from invsaga.runtime.db import (
    insert_ignore,
    load_with_children,
    open_service_database,
    upsert,
)
from invsaga.runtime.errors import InvalidArgument, NotFound, Violations
from invsaga.runtime.server import App, registration
from invsaga.warehouse.v1 import warehouse_pb2 as pb
from invsaga.warehouse.v1 import warehouse_pb2_grpc as pb_grpc
from services.warehouse import logic, models

W = models.warehouses
A = models.assortment
V = models.catalog_version

_VERSION = select(V.c.version).where(V.c.id == 1)
_BUMP = update(V).where(V.c.id == 1).values(version=V.c.version + 1)
# On PostgreSQL, the guard of the barrier row's INSERT: divides by zero, which aborts the
# Execute, unless the catalog is still at the version the answer was built from.
_SAME_VERSION_PG = "coalesce((SELECT 1 / (version = %(catalog_version)s)::int FROM catalog_version WHERE id = 1), 1) = 1"


def _to_proto(row, skus: list[str]) -> common_pb2.Warehouse:
    location = common_pb2.Location(address=row.address)
    if row.lat is not None and row.lon is not None:
        location.lat, location.lon = row.lat, row.lon
    return common_pb2.Warehouse(
        warehouse_id=row.warehouse_id,
        name=row.name,
        location=location,
        capacity=row.capacity,
        status=logic.STATUS_FROM_DB[row.status],
        priority=row.priority,
        cost=common_pb2.CostModel(per_unit=row.per_unit, per_km_unit=row.per_km_unit, per_shipment=row.per_shipment),
        skus=sorted(skus),
        updated_at=to_timestamp(row.updated_at),
    )


async def _load(conn: AsyncConnection, where=None, *, offset: int = 0, limit: int | None = None):
    found = await load_with_children(
        conn,
        select(W).order_by(W.c.warehouse_id),
        W.c.warehouse_id,
        select(A.c.warehouse_id, A.c.sku),
        A.c.warehouse_id,
        where=where,
        offset=offset,
        limit=limit,
    )
    return [_to_proto(row, [a.sku for a in skus]) for row, skus in found]


async def _get(conn: AsyncConnection, warehouse_id: str) -> common_pb2.Warehouse:
    found = await _load(conn, W.c.warehouse_id == warehouse_id)
    if not found:
        raise NotFound(f"warehouse {warehouse_id!r} not found", reason="WAREHOUSE_NOT_FOUND")
    return found[0]


@dataclass(frozen=True)
class _Carrier:
    warehouse: common_pb2.Warehouse  # without its SKUs
    skus: frozenset[str]


class Catalog:
    """The active warehouses with their assortments, in memory, for QueryWarehouses.

    Every write of the warehouses or assortment tables bumps ``catalog_version`` in its own
    transaction (``_BUMP``, after its other writes). An Execute answers from the catalog only
    if that row still holds the version the catalog was loaded at, checked in the Execute's
    own transaction: on SQLite by reading it first (``active``), on PostgreSQL as the guard of
    the barrier row's INSERT (``_SAME_VERSION_PG``), so that the check costs no round trip
    and a catalog that moved rolls the Execute back to be answered again after ``refresh``.
    Either way a write committed on any replica, this one included, is seen by every Execute
    that starts after the commit, exactly as when the tables were read on each call. The
    version is read before the tables: under READ COMMITTED a write committing in between
    makes the catalog newer than the version it is filed under, which costs one more reload
    and never keeps an old catalog.
    """

    def __init__(self) -> None:
        # The version and the catalog loaded at it, replaced together.
        self.current: tuple[int | None, tuple[_Carrier, ...]] = (None, ())

    async def active(self, conn: AsyncConnection) -> tuple[_Carrier, ...]:
        version = (await conn.execute(_VERSION)).scalar_one()
        if version != self.current[0]:
            active = []
            for warehouse in await _load(conn, W.c.status == "active"):
                skus = frozenset(warehouse.skus)
                warehouse.ClearField("skus")
                active.append(_Carrier(warehouse, skus))
            self.current = (version, tuple(active))
        return self.current[1]

    async def refresh(self, engine: AsyncEngine) -> None:
        """Load the catalog if the version has moved (or nothing is loaded yet)."""
        async with engine.connect() as conn:
            await self.active(conn)


def _candidates(
    out: pb.QueryWarehousesOutput, active: Sequence[_Carrier], wanted: set[str], preferred: Sequence[str]
) -> None:
    """Fill ``out`` with the active warehouses carrying any of ``wanted``, in candidate order,
    each listing only the wanted SKUs it carries (all that later steps look at)."""
    carriers = {c.warehouse.warehouse_id: c for c in active if not c.skus.isdisjoint(wanted)}
    for warehouse in logic.order_candidates([c.warehouse for c in carriers.values()], preferred):
        added = out.warehouses.add()
        added.CopyFrom(warehouse)
        added.skus.extend(sorted(carriers[warehouse.warehouse_id].skus & wanted))


class WarehouseServicer(pb_grpc.WarehouseServiceServicer):
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def UpsertWarehouse(self, request: pb.UpsertWarehouseRequest, context) -> pb.UpsertWarehouseResponse:
        w = request.warehouse
        logic.validate_warehouse(w)
        values = dict(
            warehouse_id=w.warehouse_id,
            name=w.name,
            address=w.location.address,
            lat=w.location.lat if w.location.HasField("lat") else None,
            lon=w.location.lon if w.location.HasField("lon") else None,
            capacity=w.capacity,
            status=logic.STATUS_TO_DB[w.status],
            priority=w.priority,
            per_unit=w.cost.per_unit,
            per_km_unit=w.cost.per_km_unit,
            per_shipment=w.cost.per_shipment,
            updated_at=utcnow(),
        )
        async with self.engine.begin() as conn:
            stmt = upsert(conn, W).values(**values)
            await conn.execute(stmt.on_conflict_do_update(index_elements=[W.c.warehouse_id], set_=values))
            if w.skus:
                await conn.execute(delete(A).where(A.c.warehouse_id == w.warehouse_id))
                await conn.execute(A.insert(), [{"warehouse_id": w.warehouse_id, "sku": s} for s in set(w.skus)])
            await conn.execute(_BUMP)
            return pb.UpsertWarehouseResponse(warehouse=await _get(conn, w.warehouse_id))

    async def GetWarehouse(self, request: pb.GetWarehouseRequest, context) -> pb.GetWarehouseResponse:
        if not request.warehouse_id:
            raise InvalidArgument("warehouse_id is required", violations=[("warehouse_id", "required")])
        async with self.engine.connect() as conn:
            return pb.GetWarehouseResponse(warehouse=await _get(conn, request.warehouse_id))

    async def ListWarehouses(self, request: pb.ListWarehousesRequest, context) -> pb.ListWarehousesResponse:
        offset, limit = page_window(request.page_size, request.page_token)
        where = None
        if request.status:
            if request.status not in logic.STATUS_TO_DB:
                raise InvalidArgument("unknown status", violations=[("status", "unknown warehouse status")])
            where = W.c.status == logic.STATUS_TO_DB[request.status]
        async with self.engine.connect() as conn:
            found = await _load(conn, where, offset=offset, limit=limit)
        return pb.ListWarehousesResponse(warehouses=found, next_page_token=next_page_token(offset, limit, len(found)))

    async def AddAssortment(self, request: pb.AddAssortmentRequest, context) -> pb.AddAssortmentResponse:
        v = Violations()
        if not request.warehouse_id:
            v.add("warehouse_id", "required")
        if not request.skus:
            v.add("skus", "at least one SKU")
        for i, sku in enumerate(request.skus):
            if not sku or len(sku) > logic.MAX_TEXT:
                v.add(f"skus[{i}]", f"must be 1 to {logic.MAX_TEXT} characters")
        v.raise_if_any("invalid assortment")
        async with self.engine.begin() as conn:
            await _get(conn, request.warehouse_id)
            await conn.execute(
                insert_ignore(conn, A), [{"warehouse_id": request.warehouse_id, "sku": s} for s in set(request.skus)]
            )
            await conn.execute(_BUMP)
            return pb.AddAssortmentResponse(warehouse=await _get(conn, request.warehouse_id))


class WarehouseStepServicer(pb_grpc.WarehouseStepServiceServicer):
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.postgres = is_postgres(engine)
        self.catalog = Catalog()

    async def Execute(self, request: pb.ExecuteRequest, context) -> pb.ExecuteResponse:
        if request.WhichOneof("input") != "query_warehouses":
            raise InvalidArgument("Execute needs query_warehouses", violations=[("input", "query_warehouses required")])
        query = request.query_warehouses
        if not query.skus:
            raise InvalidArgument("no SKUs to look for", violations=[("query_warehouses.skus", "at least one SKU")])

        wanted = set(query.skus)

        def respond(active: Sequence[_Carrier]) -> pb.ExecuteResponse:
            response = pb.ExecuteResponse()
            response.query_warehouses.SetInParent()  # the output is set even when nothing matches
            _candidates(response.query_warehouses, active, wanted, query.preferred_warehouses)
            return response

        if not self.postgres:

            async def effect(conn: AsyncConnection) -> pb.ExecuteResponse:
                return respond(await self.catalog.active(conn))

            return await execute_once(self.engine, models.barrier, request.context, pb.ExecuteResponse, effect)

        async def effect_pg(conn: psycopg.AsyncConnection) -> tuple[pb.ExecuteResponse, str, dict]:
            version, active = self.catalog.current
            return respond(active), "", {"catalog_version": version}

        if self.catalog.current[0] is None:
            await self.catalog.refresh(self.engine)
        # Round again only if the catalog is written again in between: writes are rare.
        while True:
            try:
                return await execute_once_pg_statement(
                    self.engine, request.context, pb.ExecuteResponse, effect_pg, guard=_SAME_VERSION_PG
                )
            except psycopg.errors.DivisionByZero:  # the catalog moved on: answer from the new one
                await self.catalog.refresh(self.engine)

    async def Compensate(self, request: pb.CompensateRequest, context) -> pb.CompensateResponse:
        async def effect(conn: AsyncConnection) -> pb.CompensateResponse:
            return pb.CompensateResponse()  # a query has nothing to undo

        return await compensate_once(
            self.engine,
            models.barrier,
            request.context,
            pb.CompensateResponse,
            effect,
            pb.CompensateResponse(null_compensation=True),
        )


async def build(settings: Settings) -> App:
    engine = await open_service_database(settings, models.metadata, models.__file__)
    return App(
        services=[
            registration(WarehouseServicer(engine), pb_grpc, "WarehouseService"),
            registration(WarehouseStepServicer(engine), pb_grpc, "WarehouseStepService"),
        ],
        on_stop=[engine.dispose],
    )
