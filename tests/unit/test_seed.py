"""The seed file format (SPEC §8): the demo data, and the errors a bad file gets."""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import pytest

from invsaga.common.v1 import common_pb2
from invsaga.seed import SeedError, load_seed

DEMO = Path(__file__).resolve().parents[2] / "invsaga" / "demo_data.yaml"

GOOD_WAREHOUSE = """\
  - id: WH-BJ-01
    name: 北京朝阳仓
    address: 北京市朝阳区
    lat: 39.92
    lon: 116.44
    capacity: 5000
    status: active
    priority: 10
    cost: {per_unit: 0.8, per_km_unit: 0.002, per_shipment: 12.0}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "seed.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_spec_example_loads_into_warehouse_and_stock_messages(tmp_path):
    seed = load_seed(
        write(
            tmp_path,
            "warehouses:\n" + GOOD_WAREHOUSE + "stock:\n"
            "  - {warehouse: WH-BJ-01, sku: SKU-001, product_id: PROD-001, on_hand: 120, bin: A-01-03}\n",
        )
    )

    (w,) = seed.warehouses
    assert (w.warehouse_id, w.name, w.location.address) == ("WH-BJ-01", "北京朝阳仓", "北京市朝阳区")
    assert (w.location.lat, w.location.lon, w.capacity, w.priority) == (39.92, 116.44, 5000, 10)
    assert w.status == common_pb2.WAREHOUSE_STATUS_ACTIVE
    assert (w.cost.per_unit, w.cost.per_km_unit, w.cost.per_shipment) == (0.8, 0.002, 12.0)
    assert not w.skus  # the assortment is added, never replaced
    (row,) = seed.stock
    assert (row.warehouse_id, row.sku, row.product_id, row.on_hand, row.bin) == (
        "WH-BJ-01",
        "SKU-001",
        "PROD-001",
        120,
        "A-01-03",
    )
    assert seed.assortment() == {"WH-BJ-01": ["SKU-001"]}
    assert seed.summary() == "1 warehouse, 1 stock row"


def test_demo_data_covers_eight_cities_and_twenty_skus_stocked_unevenly():
    seed = load_seed(DEMO)

    addresses = " ".join(w.location.address for w in seed.warehouses)
    for city in ("北京", "上海", "广州", "深圳", "成都", "武汉", "西安", "杭州"):
        assert city in addresses
    assert len({w.priority for w in seed.warehouses}) >= 5
    assert len({w.capacity for w in seed.warehouses}) >= 5
    assert len({(w.cost.per_unit, w.cost.per_km_unit, w.cost.per_shipment) for w in seed.warehouses}) == len(
        seed.warehouses
    )
    carriers = Counter(row.sku for row in seed.stock)
    assert len(carriers) >= 20
    assert all(row.bin for row in seed.stock)
    assert max(carriers.values()) == len(seed.warehouses) and min(carriers.values()) == 1


def test_demo_data_gives_four_different_plans_for_the_documented_order():
    from services.allocation.strategies import Candidate, Demand, allocate

    seed = load_seed(DEMO)
    active = [w for w in seed.warehouses if w.status == common_pb2.WAREHOUSE_STATUS_ACTIVE]
    candidates = [
        Candidate(
            w.warehouse_id,
            w.priority,
            w.capacity,
            0,
            w.location.lat,
            w.location.lon,
            w.cost.per_unit,
            w.cost.per_km_unit,
            w.cost.per_shipment,
        )
        for w in active
    ]
    stock = {(r.warehouse_id, r.sku): r.on_hand for r in seed.stock}
    order = [Demand("SKU-001", 40), Demand("SKU-003", 20)]
    guangzhou_tianhe = (23.13, 113.32)

    chosen = {
        strategy: {
            line.warehouse_id for line in allocate(strategy, order, candidates, stock, customer=guangzhou_tianhe).lines
        }
        for strategy in ("PRIORITY", "NEAREST", "LOAD_BALANCE", "COST_OPTIMIZE")
    }

    assert chosen == {
        "PRIORITY": {"WH-SH-01"},
        "NEAREST": {"WH-GZ-01"},
        "LOAD_BALANCE": {"WH-BJ-01"},
        "COST_OPTIMIZE": {"WH-WH-01"},
    }


BAD_FILES = [
    pytest.param("warehouses:\n  - {name: 无名仓, capacity: 10}\n", "warehouses[0]: id: required", id="missing-id"),
    pytest.param(
        "warehouses:\n" + GOOD_WAREHOUSE + "stock:\n  - {warehouse: WH-BJ-01, sku: SKU-001, on_hand: -5}\n",
        "stock[0] (WH-BJ-01/SKU-001): on_hand: must be ≥ 0, got -5",
        id="negative-on-hand",
    ),
    pytest.param(
        "warehouses:\n" + GOOD_WAREHOUSE + "stock:\n  - {warehouse: WH-XX-09, sku: SKU-001, on_hand: 5}\n",
        "stock[0] (WH-XX-09/SKU-001): unknown warehouse 'WH-XX-09'",
        id="unknown-warehouse",
    ),
    pytest.param(
        "warehouses:\n  - {id: WH-1, name: a, capacity: 10, status: open}\n",
        "warehouses[0] (WH-1): status: expected one of active, maintenance, closed, got 'open'",
        id="bad-status",
    ),
    pytest.param(
        "warehouses:\n  - {id: WH-1, name: a, capacity: 10, lat: 39.9}\n",
        "warehouses[0] (WH-1): lat/lon: give both or neither",
        id="lat-without-lon",
    ),
    pytest.param(
        "warehouses:\n  - {id: WH-1, name: a, capacity: 10, lat: 139.9, lon: 10}\n",
        "warehouses[0] (WH-1): lat: must be within [-90, 90]",
        id="lat-out-of-range",
    ),
    pytest.param(
        "warehouses:\n  - {id: WH-1, name: a, capacity: many}\n",
        "warehouses[0] (WH-1): capacity: expected a whole number, got 'many'",
        id="capacity-not-a-number",
    ),
    pytest.param(
        "warehouses:\n  - {id: WH-1, name: a, capacity: 10, cost: {per_unit: -1}}\n",
        "warehouses[0] (WH-1).cost: per_unit: must be within",
        id="negative-cost",
    ),
    pytest.param(
        "warehouses:\n  - {id: WH-1, name: a, capacity: 10}\n  - {id: WH-1, name: b, capacity: 20}\n",
        "warehouses[1] (WH-1): duplicate id (first at warehouses[0])",
        id="duplicate-warehouse",
    ),
    pytest.param(
        "warehouses:\n  - {id: WH-1, name: a, capacity: 10}\n"
        "stock:\n  - {warehouse: WH-1, sku: S, on_hand: 1}\n  - {warehouse: WH-1, sku: S, on_hand: 2}\n",
        "stock[1] (WH-1/S): duplicate stock row (first at stock[0])",
        id="duplicate-stock-row",
    ),
    pytest.param(
        "warehouses:\n  - {id: WH-1, name: a, capacity: 10}\nstock:\n  - {warehouse: WH-1, sku: S, on_hnad: 1}\n",
        "stock[0] (WH-1/S): on_hnad: unknown field",
        id="misspelt-field",
    ),
    pytest.param("warehouses: [\n", "not valid YAML", id="not-yaml"),
    pytest.param("- just\n- a list\n", "expected a mapping with 'warehouses' and 'stock'", id="not-a-mapping"),
    pytest.param("", "expected a mapping with 'warehouses' and 'stock', got nothing", id="empty"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_an_invalid_seed_file_is_refused_naming_the_entry(tmp_path, text, expected):
    path = write(tmp_path, text)

    with pytest.raises(SeedError) as caught:
        load_seed(path)

    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path):
    text = "warehouses:\n  - {id: WH-1, capacity: -1}\nstock:\n  - {warehouse: WH-2, sku: S, on_hand: -3}\n"

    with pytest.raises(SeedError) as caught:
        load_seed(write(tmp_path, text))

    message = str(caught.value)
    for part in ("name: required", "capacity: must be ≥ 0", "unknown warehouse 'WH-2'", "on_hand: must be ≥ 0"):
        assert part in message


def test_a_missing_file_is_a_seed_error(tmp_path):
    with pytest.raises(SeedError, match="cannot read"):
        load_seed(tmp_path / "absent.yaml")
