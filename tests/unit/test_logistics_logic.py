"""Picklist rules: grouping per warehouse, pick order by bin, sequences, status transitions."""

from __future__ import annotations

import grpc
import pytest

from invsaga.logistics.v1 import logistics_pb2 as pb
from invsaga.runtime.errors import InvalidArgument
from services.logistics import logic


def line(warehouse_id: str, sku: str, quantity: int, bin_code: str = "") -> pb.PickRequestLine:
    return pb.PickRequestLine(warehouse_id=warehouse_id, sku=sku, quantity=quantity, bin=bin_code)


def test_one_picklist_per_warehouse_in_warehouse_order():
    plans = logic.plan_picklists(
        [line("WH-SH", "SKU-1", 1, "A-01"), line("WH-BJ", "SKU-2", 2, "B-01"), line("WH-SH", "SKU-3", 3, "A-02")]
    )
    assert [p.warehouse_id for p in plans] == ["WH-BJ", "WH-SH"]
    assert [(l.sku, l.quantity) for l in plans[1].lines] == [("SKU-1", 1), ("SKU-3", 3)]


def test_lines_follow_the_bins_with_a_sequence_from_one():
    (plan,) = logic.plan_picklists(
        [
            line("WH", "SKU-C", 1, "B-01-02"),
            line("WH", "SKU-A", 1, "A-02-01"),
            line("WH", "SKU-B", 1, "A-01-05"),
            line("WH", "SKU-D", 1, "A-01-05"),
        ]
    )
    assert [(l.sequence, l.bin, l.sku) for l in plan.lines] == [
        (1, "A-01-05", "SKU-B"),
        (2, "A-01-05", "SKU-D"),  # same bin: by SKU
        (3, "A-02-01", "SKU-A"),
        (4, "B-01-02", "SKU-C"),
    ]


def test_bins_compare_naturally_and_unknown_bins_come_last():
    codes = ["A-10", "", "a-2", "B-1", "A-2-3"]
    assert sorted(codes, key=logic.bin_order) == ["a-2", "A-2-3", "A-10", "B-1", ""]


def test_the_same_sku_twice_in_a_warehouse_becomes_one_line():
    (plan,) = logic.plan_picklists([line("WH", "SKU-A", 2, ""), line("WH", "SKU-A", 3, "C-01")])
    assert [(l.sku, l.quantity, l.bin, l.sequence) for l in plan.lines] == [("SKU-A", 5, "C-01", 1)]


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        ("pending", "processing", True),
        ("pending", "cancelled", True),
        ("processing", "completed", True),
        ("processing", "cancelled", True),
        ("pending", "completed", False),  # picking has to start first
        ("processing", "pending", False),
        ("completed", "cancelled", False),
        ("completed", "processing", False),
        ("cancelled", "processing", False),
        ("cancelled", "pending", False),
    ],
)
def test_status_transitions(current, target, allowed):
    assert logic.transition_allowed(current, target) is allowed


def test_each_reachable_status_has_its_inventory_action():
    assert logic.INVENTORY_ACTION == {"processing": "hold", "completed": "commit", "cancelled": "release"}
    reachable = {t for targets in logic.TRANSITIONS.values() for t in targets}
    assert reachable == set(logic.INVENTORY_ACTION)


def test_invalid_input_names_every_bad_field():
    data = pb.GeneratePicklistInput(priority=11, lines=[line("", "SKU", 0), line("WH", "", 1, "x" * 65)])
    with pytest.raises(InvalidArgument) as caught:
        logic.validate_input(data)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in caught.value.violations} == {
        "generate_picklist.lines[0].warehouse_id",
        "generate_picklist.lines[0].quantity",
        "generate_picklist.lines[1].sku",
        "generate_picklist.lines[1].bin",
        "generate_picklist.priority",
    }
    with pytest.raises(InvalidArgument):
        logic.validate_input(pb.GeneratePicklistInput())
