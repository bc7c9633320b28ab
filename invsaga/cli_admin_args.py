"""The operator commands' parsers: ``invsaga stock|locks|picklist|warehouses|allocations|
notifications``, each leaf with its connection, output and paging flags (invsaga.cli_admin
runs them)."""

from __future__ import annotations

import argparse
from typing import Any

from invsaga import cli_admin as cmd
from invsaga.cli_admin import Command
from invsaga.client_cli import connection_arguments, enum_flag, enum_names, paging_arguments, run_command
from invsaga.common.v1 import common_pb2

LOCK_STATUSES = enum_names(common_pb2.LockStatus, "LOCK_STATUS_")
PICKLIST_STATUSES = enum_names(common_pb2.PicklistStatus, "PICKLIST_STATUS_")
WAREHOUSE_STATUSES = enum_names(common_pb2.WarehouseStatus, "WAREHOUSE_STATUS_")
ALLOCATION_STATUSES = enum_names(common_pb2.AllocationStatus, "ALLOCATION_STATUS_")
NOTIFICATION_KINDS = enum_names(common_pb2.NotificationKind, "NOTIFICATION_KIND_")


def _leaf(group: Any, name: str, command: Command, service: str, help_text: str) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=help_text, description=help_text)
    connection_arguments(parser, service)
    parser.set_defaults(func=lambda args: run_command(args, command), service=service)
    return parser


# -- the parsers -------------------------------------------------------------------------------
def _group(sub: Any, name: str, help_text: str) -> Any:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")


def add_commands(sub: Any) -> None:
    """Add the operator commands to the ``invsaga`` subparsers ``sub``."""
    wid: dict[str, Any] = {"metavar": "WAREHOUSE_ID", "help": "the warehouse's id"}

    stock = _group(sub, "stock", "stock levels (inventory service; admin role)")
    p = _leaf(stock, "get", cmd.stock_get, "inventory", "one stock level: on hand, locked, available")
    p.add_argument("warehouse_id", **wid)
    p.add_argument("sku", metavar="SKU", help="the SKU")
    p = _leaf(stock, "list", cmd.stock_list, "inventory", "stock levels, by warehouse and SKU")
    p.add_argument("--warehouse-id", default=None, metavar="WAREHOUSE_ID", help="only this warehouse's stock")
    p.add_argument("--sku", default=None, help="only this SKU")
    paging_arguments(p, "rows")
    p = _leaf(stock, "set", cmd.stock_set, "inventory", "set a stock level's on-hand count (not an adjustment)")
    p.add_argument("warehouse_id", **wid)
    p.add_argument("sku", metavar="SKU", help="the SKU")
    p.add_argument("on_hand", type=int, metavar="ON_HAND", help="units on hand (at least the units locked)")
    p.add_argument("--product-id", default=None, help="the SKU's product (default: unchanged)")
    p.add_argument("--bin", default=None, help="the bin it is picked from (default: unchanged)")
    p = _leaf(stock, "adjust", cmd.stock_adjust, "inventory", "add to or take from a stock level's on-hand count")
    p.add_argument("warehouse_id", **wid)
    p.add_argument("sku", metavar="SKU", help="the SKU")
    p.add_argument("delta", type=int, metavar="DELTA", help="units to add (negative: to take away, e.g. -3)")
    p.add_argument("--reason", default=None, help="why (kept with the adjustment)")

    p = _leaf(sub, "locks", cmd.locks, "inventory", "stock locks of sagas (inventory service; admin role)")
    p.add_argument("--saga", default=None, metavar="SAGA_ID", help="only this saga's locks (the whole id)")
    p.add_argument("--warehouse-id", default=None, metavar="WAREHOUSE_ID", help="only this warehouse's locks")
    enum_flag(p, "--status", LOCK_STATUSES, "only locks in this status")
    paging_arguments(p, "locks")

    picklist = _group(sub, "picklist", "picklists (logistics service; admin role)")
    p = _leaf(picklist, "list", cmd.picklist_list, "logistics", "picklists, newest first")
    p.add_argument("--saga", default=None, metavar="SAGA_ID", help="only this saga's picklists (the whole id)")
    p.add_argument("--warehouse-id", default=None, metavar="WAREHOUSE_ID", help="only this warehouse's picklists")
    enum_flag(p, "--status", PICKLIST_STATUSES, "only picklists in this status")
    paging_arguments(p, "picklists")
    p = _leaf(picklist, "get", cmd.picklist_get, "logistics", "one picklist and its lines")
    p.add_argument("picklist_id", metavar="PICKLIST_ID", help="the picklist's id")
    for name, status, text in (
        ("start", common_pb2.PICKLIST_STATUS_PROCESSING, "picking started: PROCESSING (its locks no longer expire)"),
        ("complete", common_pb2.PICKLIST_STATUS_COMPLETED, "picking done: COMPLETED (consumes the locked stock)"),
        ("cancel", common_pb2.PICKLIST_STATUS_CANCELLED, "CANCELLED: its locked stock is available again"),
    ):
        p = _leaf(picklist, name, cmd.picklist_status(status), "logistics", text)
        p.add_argument("picklist_id", metavar="PICKLIST_ID", help="the picklist's id")

    warehouses = _group(sub, "warehouses", "warehouses (warehouse service; admin role)")
    p = _leaf(warehouses, "list", cmd.warehouses_list, "warehouse", "warehouses")
    enum_flag(p, "--status", WAREHOUSE_STATUSES, "only warehouses in this status")
    paging_arguments(p, "warehouses")
    p = _leaf(warehouses, "get", cmd.warehouses_get, "warehouse", "one warehouse and its assortment")
    p.add_argument("warehouse_id", **wid)
    p = _leaf(
        warehouses,
        "upsert",
        cmd.warehouses_upsert,
        "warehouse",
        "create or change a warehouse: fields not given keep their values (a new one starts ACTIVE)",
    )
    p.add_argument("warehouse_id", **wid)
    p.add_argument(
        "--file",
        "-f",
        default=None,
        metavar="PATH",
        help="a Warehouse in YAML or JSON (proto field names), applied before the flags",
    )
    p.add_argument("--name", default=None, help="display name (required for a new warehouse)")
    enum_flag(p, "--status", WAREHOUSE_STATUSES, "ACTIVE warehouses take orders; the others do not")
    p.add_argument("--priority", type=int, default=None, help="higher first under the PRIORITY strategy")
    p.add_argument("--capacity", type=int, default=None, help="outbound handling units")
    p.add_argument("--address", default=None, help="postal address")
    p.add_argument("--lat", type=float, default=None, help="latitude (with --lon)")
    p.add_argument("--lon", type=float, default=None, help="longitude (with --lat)")
    p.add_argument("--per-unit", type=float, default=None, help="cost per unit shipped")
    p.add_argument("--per-km-unit", type=float, default=None, help="cost per unit and kilometre")
    p.add_argument("--per-shipment", type=float, default=None, help="cost per shipment")
    p.add_argument(
        "--sku", action="append", default=None, help="a SKU of the assortment (repeat; replaces the assortment)"
    )
    p = _leaf(warehouses, "add-skus", cmd.warehouses_add_skus, "warehouse", "add SKUs to a warehouse's assortment")
    p.add_argument("warehouse_id", **wid)
    p.add_argument("skus", nargs="+", metavar="SKU", help="SKUs the warehouse now carries too")

    allocations = _group(sub, "allocations", "allocations (allocation service; admin role)")
    p = _leaf(allocations, "list", cmd.allocations_list, "allocation", "allocations")
    p.add_argument("--saga", default=None, metavar="SAGA_ID", help="only this saga's allocations (the whole id)")
    enum_flag(p, "--status", ALLOCATION_STATUSES, "only allocations in this status")
    paging_arguments(p, "allocations")
    p = _leaf(allocations, "get", cmd.allocations_get, "allocation", "one allocation")
    p.add_argument("allocation_id", metavar="ALLOCATION_ID", help="the allocation's id")
    p = _leaf(allocations, "cancel", cmd.allocations_cancel, "allocation", "cancel an ACTIVE allocation")
    p.add_argument("allocation_id", metavar="ALLOCATION_ID", help="the allocation's id")
    p.add_argument("--reason", default=None, help="why")

    p = _leaf(sub, "notifications", cmd.notifications, "notify", "notifications sent (notify service; admin role)")
    p.add_argument("--saga", default=None, metavar="SAGA_ID", help="only this saga's notifications (the whole id)")
    enum_flag(p, "--kind", NOTIFICATION_KINDS, "only notifications of this kind")
    paging_arguments(p, "notifications")
