"""Inventory rules as plain calls: validation, availability summaries, expiry, notices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2 as pb
from invsaga.runtime.errors import InvalidArgument
from services.common import MAX_QUANTITY
from services.inventory import logic

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _level(warehouse_id: str, sku: str, on_hand: int, locked: int = 0) -> common_pb2.StockLevel:
    return common_pb2.StockLevel(
        warehouse_id=warehouse_id, sku=sku, on_hand=on_hand, locked=locked, available=on_hand - locked
    )


def _items(*pairs: tuple[str, int]) -> list[common_pb2.Item]:
    return [common_pb2.Item(sku=sku, quantity=q) for sku, q in pairs]


def _violations(call) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as raised:
        call()
    return raised.value.violations


def test_availability_is_summed_across_warehouses():
    out = logic.summarize_availability(
        _items(("A", 6)), ["W1", "W2"], [_level("W2", "A", 5, 1), _level("W1", "A", 3)], {"W1": 0, "W2": 9}
    )
    # No single warehouse has 6, but together they do: not a shortage.
    assert [(i.sku, i.required, i.available) for i in out.items] == [("A", 6, 7)]
    assert out.sufficient and not out.shortages
    assert [(s.warehouse_id, s.sku) for s in out.stock] == [("W1", "A"), ("W2", "A")]
    assert [(w.warehouse_id, w.locked_units) for w in out.loads] == [("W1", 0), ("W2", 9)]


def test_shortage_when_the_total_is_short_and_repeated_skus_add_up():
    out = logic.summarize_availability(
        _items(("A", 2), ("B", 1), ("A", 3)), ["W1", "W1", "W9"], [_level("W1", "A", 4)], {"W1": 0}
    )
    assert [(i.sku, i.required, i.available) for i in out.items] == [("A", 5, 4), ("B", 1, 0)]
    assert [(s.sku, s.required, s.available) for s in out.shortages] == [("A", 5, 4), ("B", 1, 0)]
    assert not out.sufficient
    assert [(w.warehouse_id, w.locked_units) for w in out.loads] == [("W1", 0), ("W9", 0)]


def test_lock_expires_at_the_earlier_of_request_and_ttl():
    assert logic.lock_expires_at(NOW, None, 1800) == NOW + timedelta(minutes=30)
    soon = NOW + timedelta(minutes=5)
    assert logic.lock_expires_at(NOW, soon, 1800) == soon
    assert logic.lock_expires_at(NOW, NOW + timedelta(hours=2), 1) == NOW + timedelta(seconds=1)


def test_lines_are_locked_in_one_global_order():
    lines = [
        common_pb2.AllocationLine(warehouse_id=w, sku=s, quantity=1) for w, s in [("W2", "A"), ("W1", "B"), ("W1", "A")]
    ]
    assert [(line.warehouse_id, line.sku) for line in logic.ordered_lines(lines)] == [
        ("W1", "A"),
        ("W1", "B"),
        ("W2", "A"),
    ]


@pytest.mark.parametrize(
    ("on_hand", "locked", "delta", "refusal"),
    [(10, 4, -6, None), (10, 4, -7, "STOCK_BELOW_LOCKED"), (10, 0, -11, "NEGATIVE_STOCK"), (0, 0, 5, None)],
)
def test_adjustment_refusal(on_hand, locked, delta, refusal):
    assert logic.adjustment_refusal(on_hand, locked, delta) == refusal


def test_lock_input_violations_name_each_field():
    bad = pb.LockInventoryInput(
        lines=[
            common_pb2.AllocationLine(warehouse_id="W1", sku="A", quantity=0),
            common_pb2.AllocationLine(warehouse_id="", sku="", quantity=MAX_QUANTITY + 1),
        ]
    )
    assert {f for f, _ in _violations(lambda: logic.validate_lock_inventory(bad))} == {
        "lock_inventory.lines[0].quantity",
        "lock_inventory.lines[1].warehouse_id",
        "lock_inventory.lines[1].sku",
        "lock_inventory.lines[1].quantity",
    }
    assert _violations(lambda: logic.validate_lock_inventory(pb.LockInventoryInput())) == [
        ("lock_inventory.lines", "at least one line")
    ]


def test_availability_input_violations():
    too_many = pb.CheckAvailabilityInput(items=_items(*[("A", 1)] * (logic.MAX_LINES + 1)))
    assert _violations(lambda: logic.validate_check_availability(too_many)) == [
        ("check_availability.items", f"at most {logic.MAX_LINES} items")
    ]
    bad = pb.CheckAvailabilityInput(items=_items(("A", -1)), warehouse_ids=["x" * 65])
    assert {f for f, _ in _violations(lambda: logic.validate_check_availability(bad))} == {
        "check_availability.items[0].quantity",
        "check_availability.warehouse_ids[0]",
    }


def test_admin_input_violations():
    assert {f for f, _ in _violations(lambda: logic.validate_set_stock(pb.SetStockRequest(on_hand=-1)))} == {
        "warehouse_id",
        "sku",
        "on_hand",
    }
    logic.validate_set_stock(pb.SetStockRequest(warehouse_id="W", sku="A", on_hand=0))
    assert _violations(lambda: logic.validate_adjust_stock(pb.AdjustStockRequest(warehouse_id="W", sku="A"))) == [
        ("delta", "must not be zero")
    ]
    assert _violations(lambda: logic.validate_lock_selector("", "W")) == [("saga_id", "required")]


def test_units_per_stock_row_groups_and_orders():
    locks = [
        logic.LockedUnits("l1", "s", "", "W2", "A", 2),
        logic.LockedUnits("l2", "s", "", "W1", "A", 1),
        logic.LockedUnits("l3", "s", "", "W2", "A", 3),
    ]
    assert logic.units_per_stock_row(locks) == [("W1", "A", 1), ("W2", "A", 5)]


def test_lock_status_mapping_is_complete():
    statuses = set(common_pb2.LockStatus.values()) - {common_pb2.LOCK_STATUS_UNSPECIFIED}
    assert set(logic.LOCK_STATUS_TO_DB) == statuses
    assert {logic.LOCK_STATUS_FROM_DB[v] for v in logic.LOCK_STATUS_TO_DB.values()} == statuses


def test_units_per_stock_row_adds_up_repeated_lines():
    lines = [
        common_pb2.AllocationLine(warehouse_id="W2", sku="A", quantity=1),
        common_pb2.AllocationLine(warehouse_id="W1", sku="A", quantity=2),
        common_pb2.AllocationLine(warehouse_id="W2", sku="A", quantity=4),
    ]
    assert logic.units_per_stock_row(lines) == [("W1", "A", 2), ("W2", "A", 5)]


def test_short_line_replays_one_rows_lines_in_order():
    def line(quantity: int) -> common_pb2.AllocationLine:
        return common_pb2.AllocationLine(warehouse_id="W", sku="A", quantity=quantity)

    first, second, third = line(3), line(3), line(1)
    assert logic.short_line([first, second, third], 5) == (second, 2)
    assert logic.short_line([first], 0) == (first, 0)
    assert logic.short_line([first, third], 3) == (third, 0)
    # All of them fit (the row changed since it was refused): the first, with every unit.
    assert logic.short_line([first, third], 9) == (first, 9)


def test_a_lock_plan_orders_lines_sums_rows_and_caps_the_expiry():
    inp = pb.LockInventoryInput(
        lines=[
            common_pb2.AllocationLine(warehouse_id=w, sku=s, quantity=q)
            for w, s, q in [("W2", "A", 1), ("W1", "B", 2), ("W2", "A", 4)]
        ]
    )
    inp.expires_at.FromDatetime(NOW + timedelta(hours=2))
    plan = logic.plan_lock(inp, NOW, 60, ["l1", "l2", "l3"])
    assert [(line.warehouse_id, line.sku) for line in plan.lines] == [("W1", "B"), ("W2", "A"), ("W2", "A")]
    assert plan.wanted == [("W1", "B", 2), ("W2", "A", 5)]
    assert plan.expires_at == NOW + timedelta(seconds=60)
    locks = plan.locks("saga-1")
    assert [(lock.lock_id, lock.sku, lock.quantity) for lock in locks] == [
        ("l1", "B", 2),
        ("l2", "A", 1),
        ("l3", "A", 4),
    ]
    assert {lock.status for lock in locks} == {common_pb2.LOCK_STATUS_HELD}

    inp.expires_at.FromDatetime(NOW)
    assert _violations(lambda: logic.plan_lock(inp, NOW, 60, ["l1", "l2", "l3"])) == [
        ("lock_inventory.expires_at", "must be in the future")
    ]


def test_a_lock_plan_sums_units_per_warehouse_against_the_capacity_given():
    """Capacity is checked per warehouse over all its SKUs, in warehouse order (the order the
    store takes the warehouses' load rows in); 0 is a capacity (no room), as in allocation,
    while a warehouse the coordinator gave no capacity for is not limited at the lock."""
    inp = pb.LockInventoryInput(
        lines=[
            common_pb2.AllocationLine(warehouse_id=w, sku=s, quantity=q)
            for w, s, q in [("W3", "A", 1), ("W1", "B", 2), ("W1", "A", 4), ("W2", "A", 7)]
        ],
        capacities={"W1": 6, "W2": 0, "W9": 5},
    )
    plan = logic.plan_lock(inp, NOW, 60, ["l1", "l2", "l3", "l4"])
    assert plan.loads == [("W1", 6, 6), ("W2", 7, 0), ("W3", 1, logic.UNLIMITED)]
    # Room left for any lock's units in a BIGINT.
    assert logic.UNLIMITED + logic.MAX_LINES * MAX_QUANTITY < 2**63


def test_lock_capacities_are_bounded_and_never_negative():
    line = common_pb2.AllocationLine(warehouse_id="W1", sku="A", quantity=1)
    bad = pb.LockInventoryInput(lines=[line], capacities={"W1": -1, "": 5})
    assert sorted(_violations(lambda: logic.validate_lock_inventory(bad))) == [
        ("lock_inventory.capacities['']", "required"),
        ("lock_inventory.capacities['W1']", "must be ≥ 0"),
    ]
    many = pb.LockInventoryInput(lines=[line], capacities={f"W{i}": 1 for i in range(logic.MAX_LINES + 1)})
    assert ("lock_inventory.capacities", f"at most {logic.MAX_LINES} warehouses") in _violations(
        lambda: logic.validate_lock_inventory(many)
    )
    logic.validate_lock_inventory(pb.LockInventoryInput(lines=[line], capacities={"W1": 0}))
