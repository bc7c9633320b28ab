"""Every invalid StartSaga of SPEC §6, through the Python stub and through grpcurl.

Each case gets its status code (INVALID_ARGUMENT with BadRequest field violations; malformed
bytes too; RESOURCE_EXHAUSTED above StartSaga's 1 MiB limit) and persists nothing: the
coordinator's saga count is the same before and after. Issue 21's cases among them: a NUL
character, a Timestamp out of range, metadata too large or too deep, a customer location
whose lat/lon are not numbers.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc
import pytest
from google.protobuf import json_format

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from invsaga.runtime.errors import RpcFailure
from invsaga.runtime.server import MAX_MESSAGE_BYTES
from tests.saga_support import order
from tests.support import start_mesh

GRPCURL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "grpcurl"
START_SAGA = "invsaga.coordinator.v1.SagaCoordinatorService/StartSaga"
LONG = "x" * 257


@dataclass
class Case:
    name: str
    change: Callable[[pb.InventoryRequest], None]
    fields: set[str]  # field paths that must be among the violations
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
    json: bool = True  # expressible in JSON (grpcurl); a Timestamp out of range is not


def _items(n: int) -> Callable[[pb.InventoryRequest], None]:
    def change(r: pb.InventoryRequest) -> None:
        del r.items[:]
        r.items.extend(common_pb2.Item(sku=f"SKU-{i}", quantity=1) for i in range(n))

    return change


def _set(**values) -> Callable[[pb.InventoryRequest], None]:
    def change(r: pb.InventoryRequest) -> None:
        for name, value in values.items():
            setattr(r, name, value)

    return change


def _item(**values) -> Callable[[pb.InventoryRequest], None]:
    def change(r: pb.InventoryRequest) -> None:
        for name, value in values.items():
            setattr(r.items[0], name, value)

    return change


def _expired(r: pb.InventoryRequest) -> None:
    r.expired_at.FromSeconds(int(time.time()) - 3600)


def _address(address: str) -> Callable[[pb.InventoryRequest], None]:
    def change(r: pb.InventoryRequest) -> None:
        r.customer_location.address = address
        r.allocation_strategy = common_pb2.ALLOCATION_STRATEGY_NEAREST

    return change


def _oversize(size: int) -> Callable[[pb.InventoryRequest], None]:
    def change(r: pb.InventoryRequest) -> None:
        r.items[0].description = "x" * size

    return change


def _timestamp(seconds: int = 0, nanos: int = 0) -> Callable[[pb.InventoryRequest], None]:
    def change(r: pb.InventoryRequest) -> None:
        r.expired_at.seconds, r.expired_at.nanos = seconds, nanos

    return change


def _metadata(**values) -> Callable[[pb.InventoryRequest], None]:
    def change(r: pb.InventoryRequest) -> None:
        r.metadata.update(values)
        if "customer_location" in values:
            r.allocation_strategy = common_pb2.ALLOCATION_STRATEGY_NEAREST

    return change


def _deep(levels: int) -> Callable[[pb.InventoryRequest], None]:
    def change(r: pb.InventoryRequest) -> None:
        node = r.metadata
        for i in range(levels - 1):
            node = node.get_or_create_struct(f"l{i}")
        node["leaf"] = 1

    return change


CASES = [
    Case("empty items", _items(0), {"items"}),
    Case("quantity 0", _item(quantity=0), {"items[0].quantity"}),
    Case("quantity -5", _item(quantity=-5), {"items[0].quantity"}),
    Case("quantity 1,000,001", _item(quantity=1_000_001), {"items[0].quantity"}),
    Case("priority 11", _set(priority=11), {"priority"}),
    Case("priority -1", _set(priority=-1), {"priority"}),
    Case("unknown strategy enum value", _set(allocation_strategy=99), {"allocation_strategy"}),
    Case("unknown request type enum value", _set(request_type=42), {"request_type"}),
    Case("a transfer through StartSaga", _set(request_type=pb.REQUEST_TYPE_TRANSFER), {"request_type"}),
    Case("1,001 items", _items(1001), {"items"}),
    Case("order_id over 256 chars", _set(order_id=LONG), {"order_id"}),
    Case("customer_id over 256 chars", _set(customer_id=LONG), {"customer_id"}),
    Case("request_id over 256 chars", _set(request_id=LONG), {"request_id"}),
    Case("sku over 256 chars", _item(sku=LONG), {"items[0].sku"}),
    Case("description over 256 chars", _item(description=LONG), {"items[0].description"}),
    Case("address over 256 chars", _address("北" * 257), {"customer_location.address"}),
    Case("expired_at in the past", _expired, {"expired_at"}),
    Case("unknown address", _address("Atlantis, under the sea"), {"customer_location.address"}),
    Case(
        "several at once",
        lambda r: (_item(quantity=0)(r), _set(priority=11)(r), _expired(r)),
        {"items[0].quantity", "priority", "expired_at"},
    ),
    Case("NUL in customer_id", _set(customer_id="C\x00"), {"request.customer_id"}),
    Case("NUL in a SKU", _item(sku="SKU\x001"), {"request.items[0].sku"}),
    Case("NUL in a metadata value", _metadata(note="a\x00b"), {"request.metadata"}),
    Case("expired_at seconds 2^62", _timestamp(seconds=2**62), {"request.expired_at.seconds"}, json=False),
    Case("expired_at nanos -5", _timestamp(seconds=4102444800, nanos=-5), {"request.expired_at.nanos"}, json=False),
    Case("metadata 32 levels deep", _deep(32), {"request.metadata"}),
    Case("metadata over 64 KiB", _metadata(blob="m" * (65 * 1024)), {"request.metadata"}),
    Case(
        "customer_location lat/lon not numbers",
        _metadata(customer_location={"lat": "x", "lon": "y"}),
        {"metadata.customer_location.lat", "metadata.customer_location.lon"},
    ),
    Case("message over StartSaga's 1 MiB limit", _oversize(1024 * 1024), set(), grpc.StatusCode.RESOURCE_EXHAUSTED),
    Case(
        "message over the 8 MiB limit", _oversize(MAX_MESSAGE_BYTES + 1024), set(), grpc.StatusCode.RESOURCE_EXHAUSTED
    ),
]


def _request(case: Case) -> pb.StartSagaRequest:
    request = order({"SKU-1": 2}, request_id=f"bad-{CASES.index(case)}")
    case.change(request)
    return pb.StartSagaRequest(request=request)


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    """A coordinator on its own: a rejected request must never get as far as a participant."""
    mesh = start_mesh(tmp_path_factory.mktemp("bad-input"), services=["coordinator"])
    yield mesh
    mesh.stop()


def _saga_count(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        count, token = 0, ""
        while True:
            reply = stub.ListSagas(pb.ListSagasRequest(page_size=1000, page_token=token), timeout=10)
            count += len(reply.sagas)
            token = reply.next_page_token
            if not token:
                return count


def _fields(violations) -> set[str]:
    return {field for field, _ in violations}


async def test_every_invalid_request_through_the_python_stub(coordinator):
    address = coordinator.address("coordinator")
    before = _saga_count(address)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        for case in CASES:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.StartSaga(_request(case), timeout=30)
            failure = RpcFailure.from_error(err.value)
            assert failure.code == case.code, (case.name, failure)
            assert case.fields <= _fields(failure.violations), (case.name, failure.violations)
            if case.code == grpc.StatusCode.INVALID_ARGUMENT:
                assert failure.violations and all(d for _, d in failure.violations), case.name

        # Raw garbage to the method: not a serialized StartSagaRequest.
        raw = channel.unary_unary(f"/{START_SAGA}")
        for garbage in (b"\xff\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05abc"):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await raw(garbage, timeout=10)
            failure = RpcFailure.from_error(err.value)
            assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, (garbage, failure)
            assert failure.violations and "StartSagaRequest" in failure.violations[0][1]
        # The same garbage to the streaming method.
        watch = channel.unary_stream("/invsaga.coordinator.v1.SagaCoordinatorService/WatchSaga")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in watch(b"\xff\xff\xff", timeout=10):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A request with no InventoryRequest at all.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.StartSaga(pb.StartSagaRequest(), timeout=10)
        assert RpcFailure.from_error(err.value).violations == [("request", "required")]
        # Unknown enum value in a query.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListSagas(pb.ListSagasRequest(status=77), timeout=10)
        assert _fields(RpcFailure.from_error(err.value).violations) == {"status"}
    assert _saga_count(address) == before


def _grpcurl(address: str, payload: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(GRPCURL), "-plaintext", "-format-error", "-max-time", "60", "-d", "@", address, START_SAGA],
        input=payload,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_invalid_request_through_grpcurl(coordinator):
    """grpcurl finds the API by reflection; ``-format-error`` prints the status and its details as JSON (stderr)."""
    address = coordinator.address("coordinator")
    before = _saga_count(address)
    for case in CASES:
        if not case.json:
            continue
        payload = json_format.MessageToJson(_request(case))
        result = _grpcurl(address, payload)
        assert result.returncode != 0, (case.name, result.stdout[:500])
        status = json.loads(result.stderr)
        assert status["code"] == case.code.value[0], (case.name, status.get("message"), result.stderr[:300])
        violations = {
            v["field"]
            for detail in status.get("details", [])
            if detail.get("@type", "").endswith("google.rpc.BadRequest")
            for v in detail.get("field_violations", detail.get("fieldViolations", []))
        }
        assert case.fields <= violations, (case.name, status)
        if case.code == grpc.StatusCode.INVALID_ARGUMENT:
            assert violations, (case.name, status)
    # A JSON enum name the schema does not know is refused by grpcurl itself, before sending.
    unknown_name = json.loads(json_format.MessageToJson(pb.StartSagaRequest(request=order({"SKU-1": 1}))))
    unknown_name["request"]["allocationStrategy"] = "ALLOCATION_STRATEGY_CHEAPEST"
    result = _grpcurl(address, json.dumps(unknown_name))
    assert result.returncode != 0 and "ALLOCATION_STRATEGY_CHEAPEST" in result.stderr
    assert _saga_count(address) == before


async def test_a_valid_request_is_persisted(coordinator):
    """The control: the count does move when a request is accepted."""
    address = coordinator.address("coordinator")
    before = _saga_count(address)
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await pb_grpc.SagaCoordinatorServiceStub(channel).StartSaga(
            pb.StartSagaRequest(request=order({"SKU-1": 1})), timeout=10
        )
    assert reply.saga_id
    assert _saga_count(address) == before + 1
