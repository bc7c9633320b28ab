"""Operator commands of ``invsaga``: the participants' admin and read RPCs.

    invsaga stock get|list|set|adjust        inventory   (InventoryService)
    invsaga locks                            inventory   (ListLocks)
    invsaga picklist list|get|start|complete|cancel     logistics (LogisticsService)
    invsaga warehouses list|get|upsert|add-skus         warehouse (WarehouseService)
    invsaga allocations list|get|cancel      allocation  (AllocationService)
    invsaga notifications                    notify      (ListNotifications)

Each reaches its service at ``--inventory``/``--logistics``/... (else ``$INVSAGA_<SERVICE>_ADDR``,
else localhost at the service's port) with the credentials of ``invsaga.client_cli``. These RPCs
are for the ``admin`` role (reads also for ``service``): see docs/security.md.
"""

from __future__ import annotations

import argparse
from typing import Any, Awaitable, Callable, Coroutine

from google.protobuf import json_format

from invsaga import output
from invsaga.allocation.v1 import allocation_pb2, allocation_pb2_grpc
from invsaga.client_cli import channel_of, collect_pages, load_message, more_pages
from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.logistics.v1 import logistics_pb2, logistics_pb2_grpc
from invsaga.notify.v1 import notify_pb2, notify_pb2_grpc
from invsaga.warehouse.v1 import warehouse_pb2, warehouse_pb2_grpc

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _value(enum: Any, prefix: str, name: str | None) -> Any:
    """The enum value of a short name checked by argparse (``HELD`` -> LOCK_STATUS_HELD); None if not given."""
    return enum.Value(prefix + name) if name else None


async def _found(call: Awaitable[Any], field: str, default: Any) -> Any:
    """The ``field`` of a Get's answer, or ``default`` when there is none (NOT_FOUND)."""
    import grpc

    try:
        return getattr(await call, field)
    except grpc.aio.AioRpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return default


def _stub(args: argparse.Namespace, channel: Any) -> Any:
    stubs = {
        "inventory": inventory_pb2_grpc.InventoryServiceStub,
        "logistics": logistics_pb2_grpc.LogisticsServiceStub,
        "warehouse": warehouse_pb2_grpc.WarehouseServiceStub,
        "allocation": allocation_pb2_grpc.AllocationServiceStub,
        "notify": notify_pb2_grpc.NotifyServiceStub,
    }
    return stubs[args.service](channel)


async def _call(args: argparse.Namespace, rpc: str, request: Any, pages: str = "") -> Any:
    """The answer to ``rpc``; for a list (``pages``: its repeated field) the page(s) the paging flags ask for."""
    async with channel_of(args, args.service) as channel:
        call = getattr(_stub(args, channel), rpc)
        return await (collect_pages(call, request, pages, args) if pages else call(request, timeout=30))


def _show(args: argparse.Namespace, reply: Any, columns: tuple[str, ...], rows: list[Any], paged: bool = False) -> int:
    if args.output != "table":
        output.emit(reply, args.output)
        return 0
    output.print_table(columns, rows)
    if paged:
        more_pages(reply)
    return 0


# -- stock and locks ---------------------------------------------------------------------------
STOCK_COLUMNS = ("warehouse", "sku", "product_id", "on_hand", "locked", "available", "bin")


def _stock_row(s: common_pb2.StockLevel) -> tuple[Any, ...]:
    return (s.warehouse_id, s.sku, s.product_id, s.on_hand, s.locked, s.available, s.bin)


async def stock_get(args: argparse.Namespace) -> int:
    reply = await _call(args, "GetStock", inventory_pb2.GetStockRequest(warehouse_id=args.warehouse_id, sku=args.sku))
    return _show(args, reply, STOCK_COLUMNS, [_stock_row(reply.stock)])


async def stock_list(args: argparse.Namespace) -> int:
    request = inventory_pb2.ListStockRequest(warehouse_id=args.warehouse_id or "", sku=args.sku or "")
    reply = await _call(args, "ListStock", request, "stock")
    return _show(args, reply, STOCK_COLUMNS, [_stock_row(s) for s in reply.stock], paged=True)


async def stock_set(args: argparse.Namespace) -> int:
    async with channel_of(args, "inventory") as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        product_id, bin_ = args.product_id, args.bin
        if product_id is None or bin_ is None:  # keep what the row has (SetStock replaces them)
            get = inventory_pb2.GetStockRequest(warehouse_id=args.warehouse_id, sku=args.sku)
            current = await _found(stub.GetStock(get, timeout=30), "stock", common_pb2.StockLevel())
            product_id = current.product_id if product_id is None else product_id
            bin_ = current.bin if bin_ is None else bin_
        request = inventory_pb2.SetStockRequest(
            warehouse_id=args.warehouse_id, sku=args.sku, product_id=product_id, on_hand=args.on_hand, bin=bin_
        )
        reply = await stub.SetStock(request, timeout=30)
    return _show(args, reply, STOCK_COLUMNS, [_stock_row(reply.stock)])


async def stock_adjust(args: argparse.Namespace) -> int:
    request = inventory_pb2.AdjustStockRequest(
        warehouse_id=args.warehouse_id, sku=args.sku, delta=args.delta, reason=args.reason or ""
    )
    reply = await _call(args, "AdjustStock", request)
    return _show(args, reply, STOCK_COLUMNS, [_stock_row(reply.stock)])


async def locks(args: argparse.Namespace) -> int:
    request = inventory_pb2.ListLocksRequest(
        saga_id=args.saga or "",
        warehouse_id=args.warehouse_id or "",
        status=_value(common_pb2.LockStatus, "LOCK_STATUS_", args.status),
    )
    reply = await _call(args, "ListLocks", request, "locks")
    rows = [
        (
            lock.lock_id,
            output.saga_id_cell(lock.saga_id),
            lock.warehouse_id,
            lock.sku,
            lock.quantity,
            output.enum_name(common_pb2.LockStatus, lock.status, "LOCK_STATUS_"),
            "yes" if lock.picking else "",
            output.local_time(lock.expires_at),
            output.local_time(lock.created_at),
        )
        for lock in reply.locks
    ]
    columns = ("lock_id", "saga_id", "warehouse", "sku", "quantity", "status", "picking", "expires", "created")
    return _show(args, reply, columns, rows, paged=True)


# -- picklists ---------------------------------------------------------------------------------
PICKLIST_COLUMNS = ("picklist_id", "warehouse", "order", "saga_id", "status", "urgent", "lines", "units", "created")


def _picklist_row(p: common_pb2.Picklist) -> tuple[Any, ...]:
    return (
        p.picklist_id,
        p.warehouse_id,
        p.order_id,
        output.saga_id_cell(p.saga_id),
        output.enum_name(common_pb2.PicklistStatus, p.status, "PICKLIST_STATUS_"),
        "yes" if p.is_urgent else "",
        len(p.lines),
        sum(line.quantity for line in p.lines),
        output.local_time(p.created_at),
    )


async def picklist_list(args: argparse.Namespace) -> int:
    request = logistics_pb2.ListPicklistsRequest(
        saga_id=args.saga or "",
        warehouse_id=args.warehouse_id or "",
        status=_value(common_pb2.PicklistStatus, "PICKLIST_STATUS_", args.status),
    )
    reply = await _call(args, "ListPicklists", request, "picklists")
    return _show(args, reply, PICKLIST_COLUMNS, [_picklist_row(p) for p in reply.picklists], paged=True)


def _show_picklist(args: argparse.Namespace, reply: Any) -> int:
    if args.output != "table":
        output.emit(reply, args.output)
        return 0
    p = reply.picklist
    output.print_table(PICKLIST_COLUMNS, [_picklist_row(p)])
    lines = sorted(p.lines, key=lambda line: line.sequence)
    output.print_table(("#", "sku", "quantity", "bin"), [(x.sequence, x.sku, x.quantity, x.bin) for x in lines])
    return 0


async def picklist_get(args: argparse.Namespace) -> int:
    reply = await _call(args, "GetPicklist", logistics_pb2.GetPicklistRequest(picklist_id=args.picklist_id))
    return _show_picklist(args, reply)


def picklist_status(status: Any) -> Command:
    async def command(args: argparse.Namespace) -> int:
        request = logistics_pb2.UpdatePicklistStatusRequest(picklist_id=args.picklist_id, status=status)
        return _show_picklist(args, await _call(args, "UpdatePicklistStatus", request))

    return command


# -- warehouses --------------------------------------------------------------------------------
WAREHOUSE_COLUMNS = (
    "warehouse_id",
    "name",
    "status",
    "priority",
    "capacity",
    "location",
    "cost unit/km/shipment",
    "skus",
    "updated",
)


def _warehouse_row(w: common_pb2.Warehouse) -> tuple[Any, ...]:
    where = w.location.address
    if w.location.HasField("lat"):
        where = f"{where} ({w.location.lat:g}, {w.location.lon:g})".strip()
    return (
        w.warehouse_id,
        w.name,
        output.enum_name(common_pb2.WarehouseStatus, w.status, "WAREHOUSE_STATUS_"),
        w.priority,
        w.capacity,
        where,
        f"{w.cost.per_unit:g}/{w.cost.per_km_unit:g}/{w.cost.per_shipment:g}",
        len(w.skus),
        output.local_time(w.updated_at),
    )


async def warehouses_list(args: argparse.Namespace) -> int:
    request = warehouse_pb2.ListWarehousesRequest(
        status=_value(common_pb2.WarehouseStatus, "WAREHOUSE_STATUS_", args.status)
    )
    reply = await _call(args, "ListWarehouses", request, "warehouses")
    return _show(args, reply, WAREHOUSE_COLUMNS, [_warehouse_row(w) for w in reply.warehouses], paged=True)


def _show_warehouse(args: argparse.Namespace, reply: Any) -> int:
    if args.output != "table":
        output.emit(reply, args.output)
        return 0
    output.print_table(WAREHOUSE_COLUMNS, [_warehouse_row(reply.warehouse)])
    if reply.warehouse.skus:
        output.console().print("skus: " + ", ".join(reply.warehouse.skus))
    return 0


async def warehouses_get(args: argparse.Namespace) -> int:
    reply = await _call(args, "GetWarehouse", warehouse_pb2.GetWarehouseRequest(warehouse_id=args.warehouse_id))
    return _show_warehouse(args, reply)


def _warehouse(data: dict[str, Any]) -> common_pb2.Warehouse:
    """A Warehouse from its fields in YAML or JSON; ``status`` may be short (``ACTIVE``)."""
    if isinstance(data.get("status"), str) and not data["status"].upper().startswith("WAREHOUSE_STATUS_"):
        data = {**data, "status": "WAREHOUSE_STATUS_" + data["status"].upper()}
    return json_format.ParseDict(data, common_pb2.Warehouse())


async def warehouses_upsert(args: argparse.Namespace) -> int:
    """The warehouse as it is (if it exists), then the file's fields, then the flags: UpsertWarehouse
    replaces a whole warehouse, so what is not given stays as it was."""
    given = load_message(args.file, "Warehouse", _warehouse) if args.file else None
    async with channel_of(args, "warehouse") as channel:
        stub = warehouse_pb2_grpc.WarehouseServiceStub(channel)
        get = warehouse_pb2.GetWarehouseRequest(warehouse_id=args.warehouse_id)
        new = common_pb2.Warehouse(warehouse_id=args.warehouse_id, status=common_pb2.WAREHOUSE_STATUS_ACTIVE)
        w = await _found(stub.GetWarehouse(get, timeout=30), "warehouse", new)
        if given is not None:
            w.MergeFrom(given)
            if given.skus:
                w.ClearField("skus")
                w.skus.extend(given.skus)
        w.warehouse_id = args.warehouse_id
        if args.status:
            w.status = _value(common_pb2.WarehouseStatus, "WAREHOUSE_STATUS_", args.status)
        for message, names in (
            (w, ("name", "capacity", "priority")),
            (w.location, ("address", "lat", "lon")),
            (w.cost, ("per_unit", "per_km_unit", "per_shipment")),
        ):
            for name in names:  # each flag is named as its field
                if getattr(args, name) is not None:
                    setattr(message, name, getattr(args, name))
        if args.sku:
            w.ClearField("skus")
            w.skus.extend(args.sku)
        w.ClearField("updated_at")
        reply = await stub.UpsertWarehouse(warehouse_pb2.UpsertWarehouseRequest(warehouse=w), timeout=30)
    return _show_warehouse(args, reply)


async def warehouses_add_skus(args: argparse.Namespace) -> int:
    request = warehouse_pb2.AddAssortmentRequest(warehouse_id=args.warehouse_id, skus=args.skus)
    return _show_warehouse(args, await _call(args, "AddAssortment", request))


# -- allocations and notifications ------------------------------------------------------------
ALLOCATION_COLUMNS = ("allocation_id", "saga_id", "strategy", "status", "cost", "optimal", "lines", "expires")


def _allocation_row(a: common_pb2.Allocation) -> tuple[Any, ...]:
    return (
        a.allocation_id,
        output.saga_id_cell(a.saga_id),
        output.enum_name(common_pb2.AllocationStrategy, a.strategy, "ALLOCATION_STRATEGY_"),
        output.enum_name(common_pb2.AllocationStatus, a.status, "ALLOCATION_STATUS_"),
        f"{a.total_cost:.2f}",
        "yes" if a.optimal else "no",
        ", ".join(f"{x.warehouse_id}:{x.sku}×{x.quantity}" for x in a.lines),
        output.local_time(a.expires_at),
    )


async def allocations_list(args: argparse.Namespace) -> int:
    request = allocation_pb2.ListAllocationsRequest(
        saga_id=args.saga or "", status=_value(common_pb2.AllocationStatus, "ALLOCATION_STATUS_", args.status)
    )
    reply = await _call(args, "ListAllocations", request, "allocations")
    return _show(args, reply, ALLOCATION_COLUMNS, [_allocation_row(a) for a in reply.allocations], paged=True)


async def allocations_get(args: argparse.Namespace) -> int:
    reply = await _call(args, "GetAllocation", allocation_pb2.GetAllocationRequest(allocation_id=args.allocation_id))
    return _show(args, reply, ALLOCATION_COLUMNS, [_allocation_row(reply.allocation)])


async def allocations_cancel(args: argparse.Namespace) -> int:
    request = allocation_pb2.CancelAllocationRequest(allocation_id=args.allocation_id, reason=args.reason or "")
    reply = await _call(args, "CancelAllocation", request)
    return _show(args, reply, ALLOCATION_COLUMNS, [_allocation_row(reply.allocation)])


async def notifications(args: argparse.Namespace) -> int:
    request = notify_pb2.ListNotificationsRequest(
        saga_id=args.saga or "", kind=_value(common_pb2.NotificationKind, "NOTIFICATION_KIND_", args.kind)
    )
    reply = await _call(args, "ListNotifications", request, "notifications")
    delivery = notify_pb2.DeliveryState
    rows = [
        (
            n.notification_id,
            output.saga_id_cell(n.saga_id),
            output.enum_name(common_pb2.NotificationKind, n.kind, "NOTIFICATION_KIND_"),
            n.order_id,
            n.customer_id,
            n.message,
            ", ".join(f"{d.channel} {output.enum_name(delivery, d.state, 'DELIVERY_STATE_')}" for d in n.deliveries),
            output.local_time(n.created_at),
        )
        for n in reply.notifications
    ]
    columns = ("notification_id", "saga_id", "kind", "order", "customer", "message", "deliveries", "created")
    return _show(args, reply, columns, rows, paged=True)
