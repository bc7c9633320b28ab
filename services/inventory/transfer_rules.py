"""Transfer rules at inventory (SPEC §10): the checks of an expectation and of a receipt, and
what a receipt books, with no database in sight."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2 as pb
from invsaga.runtime.errors import FailedPrecondition, Violations
from services.common import MAX_LINES, check_count, check_id, check_quantity, db_names
from services.inventory.logic import MAX_TEXT

EXPECTED, IN_TRANSIT, RECEIVED, RECEIVED_SHORT, CANCELLED = (
    "expected",
    "in_transit",
    "received",
    "received_short",
    "cancelled",
)
LINE_STATUS_FROM_DB = {name: value for value, name in db_names(common_pb2.TransferLineStatus).items()}


def validate_expect(inp: pb.ExpectTransferInput) -> None:
    v = Violations()
    check_id(v, "expect_transfer.from_warehouse", inp.from_warehouse)
    check_id(v, "expect_transfer.to_warehouse", inp.to_warehouse)
    if inp.from_warehouse and inp.from_warehouse == inp.to_warehouse:
        v.add("expect_transfer.to_warehouse", "must differ from from_warehouse")
    check_count(v, "expect_transfer.items", len(inp.items), "item")
    seen: set[str] = set()
    for i, item in enumerate(inp.items[:MAX_LINES]):
        check_id(v, f"expect_transfer.items[{i}].sku", item.sku, limit=MAX_TEXT)
        check_id(v, f"expect_transfer.items[{i}].product_id", item.product_id, limit=MAX_TEXT, required=False)
        check_quantity(v, f"expect_transfer.items[{i}].quantity", item.quantity)
        if item.sku in seen:
            v.add(f"expect_transfer.items[{i}].sku", "one line per SKU")
        seen.add(item.sku)
    v.raise_if_any("invalid transfer expectation")


def validate_receipt(request: pb.ReceiveTransferRequest) -> None:
    v = Violations()
    check_id(v, "transfer_id", request.transfer_id)
    if len(request.lines) > MAX_LINES:
        v.add("lines", f"at most {MAX_LINES} lines")
    seen: set[str] = set()
    for i, line in enumerate(request.lines[:MAX_LINES]):
        check_id(v, f"lines[{i}].sku", line.sku, limit=MAX_TEXT)
        if line.quantity < 0:
            v.add(f"lines[{i}].quantity", "must be ≥ 0")
        if line.sku in seen:
            v.add(f"lines[{i}].sku", "one line per SKU")
        seen.add(line.sku)
    v.raise_if_any("invalid receipt")


@dataclass(frozen=True)
class StoredLine:
    sku: str
    quantity: int
    received: int
    status: str


def plan_receipt(
    transfer_id: str, stored: Sequence[StoredLine], lines: Sequence[common_pb2.ReceivedLine]
) -> dict[str, int] | None:
    """Units received per SKU of the transfer, or None for a repeat of the receipt already
    booked (answered with what was booked). Raises what makes the receipt wrong: a SKU not in
    the transfer or more than was shipped (INVALID_ARGUMENT, the line named), a transfer not in
    transit (FAILED_PRECONDITION)."""
    by_sku = {line.sku: line for line in stored}
    v = Violations()
    for i, line in enumerate(lines):
        found = by_sku.get(line.sku)
        if found is None:
            v.add(f"lines[{i}].sku", f"{line.sku!r} is not in transfer {transfer_id!r}")
        elif line.quantity > found.quantity:
            v.add(f"lines[{i}].quantity", f"at most {found.quantity} were shipped")
    v.raise_if_any("invalid receipt")
    received = {line.sku: 0 for line in stored}
    received.update({line.sku: line.quantity for line in lines})
    statuses = {line.status for line in stored}
    if statuses <= {RECEIVED, RECEIVED_SHORT}:
        if all(received[line.sku] == line.received for line in stored):
            return None
        raise FailedPrecondition(
            f"transfer {transfer_id!r} was already received",
            reason="ALREADY_RECEIVED",
            metadata={"transfer_id": transfer_id},
        )
    if statuses != {IN_TRANSIT}:
        reason = "TRANSFER_CANCELLED" if CANCELLED in statuses else "NOT_SHIPPED"
        raise FailedPrecondition(
            f"transfer {transfer_id!r} is not in transit ({', '.join(sorted(statuses))})",
            reason=reason,
            metadata={"transfer_id": transfer_id, "statuses": ",".join(sorted(statuses))},
        )
    return received
