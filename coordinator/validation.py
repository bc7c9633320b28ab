"""StartSaga input rules (SPEC §6): every violation reported at once, nothing persisted."""

from __future__ import annotations

import time

from google.protobuf import struct_pb2

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.errors import Violations

MAX_ITEMS = 1000
MAX_QUANTITY = 1_000_000
MAX_TEXT = 256
DEFAULT_PRIORITY = 5
NEEDS_POSITION = (common_pb2.ALLOCATION_STRATEGY_NEAREST, common_pb2.ALLOCATION_STRATEGY_COST_OPTIMIZE)


def _location_from_metadata(metadata: struct_pb2.Struct, v: Violations | None = None) -> common_pb2.Location | None:
    """Seed compatibility: ``metadata.customer_location`` as an address string or {address, lat, lon}.

    Anything else is a violation (recorded in ``v``), never a silent (0, 0): lat and lon must
    be numbers and come together, the address a string. ``null`` is no location.
    """
    if "customer_location" not in metadata.fields:
        return None
    v = v if v is not None else Violations()
    path = "metadata.customer_location"
    value = metadata.fields["customer_location"]
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return common_pb2.Location(address=value.string_value)
    if kind in (None, "null_value"):
        return None
    if kind != "struct_value":
        v.add(path, "an address string or an object with address and/or lat and lon")
        return None
    fields = value.struct_value.fields
    loc = common_pb2.Location()
    if "address" in fields:
        if fields["address"].WhichOneof("kind") != "string_value":
            v.add(f"{path}.address", "must be a string")
        else:
            loc.address = fields["address"].string_value
    coordinates = [name for name in ("lat", "lon") if name in fields]
    if len(coordinates) == 1:
        v.add(path, "lat and lon go together")
    elif coordinates:
        numbers = {}
        for name in ("lat", "lon"):
            if fields[name].WhichOneof("kind") != "number_value":
                v.add(f"{path}.{name}", "must be a number")
            else:
                numbers[name] = fields[name].number_value
        if len(numbers) == 2:
            loc.lat, loc.lon = numbers["lat"], numbers["lon"]
    return loc


def check_items(items, field: str, v: Violations) -> None:
    """``items`` (an order's or a transfer's): 1 to MAX_ITEMS lines, each a SKU once, a quantity
    in bounds, bounded text; violations named ``field`` and ``field[i].name``."""
    if not items:
        v.add(field, "at least one item is required")
    if len(items) > MAX_ITEMS:
        v.add(field, f"at most {MAX_ITEMS} items")
    seen: set[str] = set()
    for i, item in enumerate(items[: MAX_ITEMS + 1]):
        where = f"{field}[{i}]"
        if not item.sku:
            v.add(f"{where}.sku", "required")
        elif item.sku in seen:
            v.add(f"{where}.sku", f"duplicate SKU {item.sku!r}: one line per SKU")
        seen.add(item.sku)
        if item.quantity <= 0:
            v.add(f"{where}.quantity", "must be > 0")
        elif item.quantity > MAX_QUANTITY:
            v.add(f"{where}.quantity", f"must be ≤ {MAX_QUANTITY:,}")
        for name in ("product_id", "sku", "unit", "description"):
            if len(getattr(item, name)) > MAX_TEXT:
                v.add(f"{where}.{name}", f"at most {MAX_TEXT} characters")


def customer_location(request: pb.InventoryRequest, v: Violations | None = None) -> common_pb2.Location | None:
    if request.HasField("customer_location"):
        return request.customer_location
    return _location_from_metadata(request.metadata, v)


def normalize(request: pb.InventoryRequest, *, resolve_address=None) -> pb.InventoryRequest:
    """Validate ``request`` and return it with defaults filled in (changed in place: a
    StartSaga of 1 MiB is not copied once more for this).

    ``resolve_address(address)`` raises ValueError for an address the gazetteer does not know.
    """
    v = Violations()
    r = request
    for name in ("request_id", "order_id", "customer_id"):
        if len(getattr(r, name)) > MAX_TEXT:
            v.add(name, f"at most {MAX_TEXT} characters")
    if not r.order_id:
        v.add("order_id", "required")
    if r.request_type not in pb.RequestType.values():
        v.add("request_type", f"unknown request type {r.request_type}")
    elif r.request_type == pb.REQUEST_TYPE_UNSPECIFIED:
        r.request_type = pb.REQUEST_TYPE_RESERVATION
    elif r.request_type == pb.REQUEST_TYPE_TRANSFER:
        # A transfer has two ends and no customer: its own RPC and its own saga (SPEC §10).
        v.add("request_type", "a transfer between warehouses is started with StartTransfer, not StartSaga")
    if len(r.allocation_id) > MAX_TEXT:
        v.add("allocation_id", f"at most {MAX_TEXT} characters")
    elif r.allocation_id and r.request_type not in (pb.REQUEST_TYPE_RESERVATION, pb.REQUEST_TYPE_UNSPECIFIED):
        v.add("allocation_id", "only a RESERVATION confirms an allocation")
    check_items(r.items, "items", v)
    if len(r.preferred_warehouses) > MAX_ITEMS:
        v.add("preferred_warehouses", f"at most {MAX_ITEMS} warehouses")
    for i, wid in enumerate(r.preferred_warehouses):
        if not wid or len(wid) > MAX_TEXT:
            v.add(f"preferred_warehouses[{i}]", f"must be 1 to {MAX_TEXT} characters")
    if r.allocation_strategy not in common_pb2.AllocationStrategy.values():
        v.add("allocation_strategy", f"unknown strategy {r.allocation_strategy}")
    elif r.allocation_strategy == common_pb2.ALLOCATION_STRATEGY_UNSPECIFIED:
        r.allocation_strategy = common_pb2.ALLOCATION_STRATEGY_PRIORITY
    # 0 is proto3's "not set": the default priority. Anything else must be within 1-10.
    if r.priority == 0:
        r.priority = DEFAULT_PRIORITY
    elif not 1 <= r.priority <= 10:
        v.add("priority", "must be within 1-10")
    if r.HasField("expired_at"):
        if r.expired_at.seconds < 0 or r.expired_at.ToNanoseconds() <= time.time_ns():
            v.add("expired_at", "must be in the future")

    from_metadata = not r.HasField("customer_location")
    where = "metadata.customer_location" if from_metadata else "customer_location"
    location = customer_location(r, v)
    if location is not None:
        if location.HasField("lat") != location.HasField("lon"):
            v.add(where, "lat and lon go together")
        elif location.HasField("lat"):
            if not -90 <= location.lat <= 90:  # NaN too
                v.add(f"{where}.lat", "must be within [-90, 90]")
            if not -180 <= location.lon <= 180:
                v.add(f"{where}.lon", "must be within [-180, 180]")
        elif location.address:
            if len(location.address) > MAX_TEXT:
                v.add(f"{where}.address", f"at most {MAX_TEXT} characters")
            elif resolve_address is not None:
                try:
                    resolve_address(location.address)
                except ValueError:
                    v.add(f"{where}.address", f"unknown address {location.address!r}")
        r.customer_location.CopyFrom(location)
    has_position = location is not None and (location.HasField("lat") or bool(location.address))
    if r.allocation_strategy in NEEDS_POSITION and not has_position:
        v.add("customer_location", "NEAREST and COST_OPTIMIZE need the customer's address or lat/lon")
    v.raise_if_any("invalid inventory request")
    return r
