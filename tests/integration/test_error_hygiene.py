"""Error hygiene over a real mesh (issue 21): every error coded right, none telling internals.

Reproductions from the issue, each now refused early with INVALID_ARGUMENT (or RESOURCE_EXHAUSTED
for size) and a field violation, nothing persisted, reads still working: a page token decoding
to offset 10^20 on each List RPC; a NUL character in any string of any request (every string
field of every RPC, found from the service descriptors); Timestamps with seconds 2^62 or nanos
-5 (every Timestamp field of every RPC); an AdjustStock delta of 2^63 - 1; an 8 MB StartSaga,
a metadata Struct 32 levels deep; ``metadata.customer_location {"lat": "x", "lon": "y"}``. And
the database made unreachable under a running coordinator and participant: UNAVAILABLE, which
clients retry, not UNKNOWN. No answer (message, details, trailers) names SQL, the driver, the
database's host and port, or a class.
"""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path
from typing import Any, Iterator

import grpc
import psycopg
import pytest
from google.protobuf import descriptor_pool, message_factory, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from invsaga.allocation.v1 import allocation_pb2  # noqa: F401 - registers its services
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2
from invsaga.logistics.v1 import logistics_pb2  # noqa: F401
from invsaga.notify.v1 import notify_pb2  # noqa: F401
from invsaga.runtime.convert import MAX_PAGE_OFFSET
from invsaga.runtime.errors import RpcFailure
from invsaga.warehouse.v1 import warehouse_pb2  # noqa: F401
from services.inventory.logic import MAX_STOCK
from tests.saga_support import WH, MeshClient, order
from tests import support
from tests.support import start_mesh

SERVICES = {
    "coordinator": ["invsaga.coordinator.v1.SagaCoordinatorService"],
    "inventory": ["invsaga.inventory.v1.InventoryService", "invsaga.inventory.v1.InventoryStepService"],
    "warehouse": ["invsaga.warehouse.v1.WarehouseService", "invsaga.warehouse.v1.WarehouseStepService"],
    "allocation": ["invsaga.allocation.v1.AllocationService", "invsaga.allocation.v1.AllocationStepService"],
    "logistics": ["invsaga.logistics.v1.LogisticsService", "invsaga.logistics.v1.LogisticsStepService"],
    "notify": ["invsaga.notify.v1.NotifyService", "invsaga.notify.v1.NotifyStepService"],
}
POOL = descriptor_pool.Default()

# What no answer may carry: SQL, the driver, where the database is, a class or a traceback.
LEAKS = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|WHERE|OFFSET|VALUES|RETURNING|bigint|varchar)\b"
    r"|psycopg|sqlalchemy|postgres|127\.0\.0\.1|5432|<class|Traceback|Unexpected"
    r"|\b[A-Z][A-Za-z]*(Error|Exception)\b"
)


# -- helpers ------------------------------------------------------------------------------------
def answer_text(error: grpc.aio.AioRpcError) -> str:
    """All a client is told: message, trailers, and the decoded status details."""
    parts = [error.details() or ""]
    for key, value in error.trailing_metadata() or ():
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(f"{key}={raw.decode('utf-8', 'replace')}")
        if key == "grpc-status-details-bin":
            parts.extend(_status_text(status_pb2.Status.FromString(raw)))
    return "\n".join(parts)


def _status_text(status: status_pb2.Status) -> Iterator[str]:
    yield status.message
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            for v in bad.field_violations:
                yield f"{v.field}: {v.description}"
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            yield info.reason
            yield from (f"{k}={v}" for k, v in info.metadata.items())
        else:
            yield detail.type_url


def assert_clean(text: str, context: Any = "") -> None:
    found = LEAKS.search(text)
    assert found is None, f"{context}: the answer tells {found.group(0)!r}: {text[:600]}"


def call_status_text(status: common_pb2.CallStatus) -> str:
    return "\n".join(_status_text(status_pb2.Status.FromString(status.SerializeToString())))


async def refused(call, request, code=grpc.StatusCode.INVALID_ARGUMENT, context: Any = "") -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, timeout=30)
    failure = RpcFailure.from_error(caught.value)
    assert failure.code == code, (context, failure)
    assert_clean(answer_text(caught.value), context)
    return failure


def method_call(channel: grpc.aio.Channel, method) -> Any:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    return channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )


def unary_methods() -> Iterator[tuple[str, Any]]:
    for process, services in SERVICES.items():
        for service in services:
            for method in POOL.FindServiceByName(service).methods:
                if not method.client_streaming and not method.server_streaming:
                    yield process, method


def _set_path(message: Any, path: list[Any], leaf) -> None:
    """Set the field at ``path`` (names, with 0 for 'the first element') by ``leaf(holder, name)``."""
    *parents, name = path
    holder = message
    for step in parents:
        if step == 0:
            holder = holder.add() if not len(holder) else holder[0]
        else:
            holder = getattr(holder, step)
    leaf(holder, name)


def field_paths(descriptor, want: str, prefix: tuple = (), depth: int = 0) -> Iterator[tuple[list, str]]:
    """Every (path, shown path) to a field of kind ``want`` ("string", "timestamp") in a message,
    at most 5 levels deep; repeated fields through their first element, map<string, string>
    through one entry (a violation names the map, not its key), a Struct as one string field."""
    if depth > 5:
        return
    for fd in descriptor.fields:
        shown = ".".join(str(p) for p in (*prefix, fd.name)).replace(".0", "[0]")
        is_map = fd.type == fd.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry
        if is_map:
            if want == "string" and fd.message_type.fields_by_name["value"].type == fd.TYPE_STRING:
                yield [*prefix, fd.name, ("map", "k")], shown
            continue
        if fd.type == fd.TYPE_STRING and want == "string":
            yield (
                ([*prefix, fd.name, 0] if fd.is_repeated else [*prefix, fd.name]),
                shown + ("[0]" if fd.is_repeated else ""),
            )
        elif fd.type == fd.TYPE_MESSAGE:
            name = fd.message_type.full_name
            if name == "google.protobuf.Timestamp":
                if want == "timestamp" and not fd.is_repeated:
                    yield [*prefix, fd.name], shown
            elif name == "google.protobuf.Struct":
                if want == "string":
                    yield [*prefix, fd.name, ("struct", "k")], shown
            elif name.startswith("google.protobuf."):
                continue
            else:
                nested = (*prefix, fd.name, 0) if fd.is_repeated else (*prefix, fd.name)
                yield from field_paths(fd.message_type, want, nested, depth + 1)


def with_value(request_class, path: list, value: Any) -> Any:
    request = request_class()
    *head, last = path
    if isinstance(last, tuple):  # a map entry or a Struct key
        kind, key = last

        def leaf(holder, name):
            getattr(holder, name)[key] = value

        _set_path(request, head, leaf)
    elif last == 0:  # a repeated string
        _set_path(request, head, lambda holder, name: getattr(holder, name).append(value))
    else:
        _set_path(
            request,
            path,
            lambda holder, name: setattr(holder, name, value) if not callable(value) else value(getattr(holder, name)),
        )
    return request


def token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


def saga_count(mesh) -> int:
    url = mesh.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM coordinator.sagas").fetchone()[0]


def nested_struct(levels: int) -> struct_pb2.Struct:
    root = struct_pb2.Struct()
    node = root
    for i in range(levels - 1):
        node = node.get_or_create_struct(f"level{i}")
    node["leaf"] = 1
    return root


# -- the mesh -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    started = start_mesh(tmp_path_factory.mktemp("hygiene"))
    yield started
    started.stop()


@pytest.fixture
async def client(mesh):
    c = MeshClient(mesh)
    await c.seed([WH("WH-A")], [("WH-A", "SKU-1", 100)])
    yield c
    await c.check_books()
    await c.close()


def channels(mesh) -> dict[str, grpc.aio.Channel]:
    return {name: grpc.aio.insecure_channel(mesh.address(name)) for name in SERVICES}


async def test_a_page_token_past_the_bound_on_every_list_rpc(mesh, client):
    chans = channels(mesh)
    listed = 0
    try:
        for process, method in unary_methods():
            if "page_token" not in method.input_type.fields_by_name:
                continue
            request_class = message_factory.GetMessageClass(method.input_type)
            call = method_call(chans[process], method)
            for bad in (token(10**20), token(MAX_PAGE_OFFSET + 1), token(-1), "not a token", "x" * 500):
                failure = await refused(call, request_class(page_token=bad), context=(method.full_name, bad))
                assert failure.violations == [("page_token", "not a token from this API")], method.full_name
            await call(request_class(page_token=token(MAX_PAGE_OFFSET)), timeout=30)  # at the bound: an empty page
            await call(request_class(), timeout=30)  # and the listing itself works
            listed += 1
    finally:
        for channel in chans.values():
            await channel.close()
    assert listed == 8, (
        "ListSagas, ListStock, ListLocks, ListTransfers, ListWarehouses, ListAllocations, ListPicklists,"
        " ListNotifications"
    )


async def test_a_nul_in_any_string_of_any_request_is_refused_before_the_servicer(mesh, client):
    before = saga_count(mesh)
    stock_before = await client.stock()
    chans = channels(mesh)
    checked = 0
    try:
        for process, method in unary_methods():
            request_class = message_factory.GetMessageClass(method.input_type)
            call = method_call(chans[process], method)
            for path, shown in field_paths(method.input_type, "string"):
                request = with_value(request_class, path, "bad\x00value")
                failure = await refused(call, request, context=(method.full_name, shown))
                assert failure.violations and failure.violations[0][0] == shown, (method.full_name, failure.violations)
                assert "NUL" in failure.violations[0][1]
                checked += 1
    finally:
        for channel in chans.values():
            await channel.close()
    assert checked > 100

    # A request of an ExecuteStream message: refused on its own, its neighbour served.
    good = inventory_pb2.ExecuteRequest(
        context=common_pb2.StepContext(saga_id="hygiene-ok", step=common_pb2.SAGA_STEP_CHECK_AVAILABILITY),
        check_availability=inventory_pb2.CheckAvailabilityInput(items=[common_pb2.Item(sku="SKU-1", quantity=1)]),
    )
    bad = inventory_pb2.ExecuteRequest()
    bad.CopyFrom(good)
    bad.context.saga_id = "hygiene\x00bad"
    async with grpc.aio.insecure_channel(mesh.address("inventory")) as channel:
        from invsaga.inventory.v1 import inventory_pb2_grpc

        steps = inventory_pb2_grpc.InventoryStepServiceStub(channel)

        async def messages():
            yield inventory_pb2.ExecuteStreamRequest(id=7, requests=[bad, good])

        answers = [a async for a in steps.ExecuteStream(messages(), timeout=30)]
        assert [a.id for a in answers] == [7]
        first, second = answers[0].results
        assert first.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and second.HasField("response")
        assert_clean(call_status_text(first.error), "ExecuteStream item")
        assert "context.saga_id" in call_status_text(first.error)

    assert saga_count(mesh) == before
    assert await client.stock() == stock_before


async def test_timestamps_out_of_range_in_any_request(mesh, client):
    before = saga_count(mesh)
    chans = channels(mesh)
    checked = 0
    try:
        for process, method in unary_methods():
            request_class = message_factory.GetMessageClass(method.input_type)
            call = method_call(chans[process], method)
            for path, shown in field_paths(method.input_type, "timestamp"):
                for field, value in (("seconds", 2**62), ("nanos", -5), ("seconds", -(2**62))):
                    request = with_value(request_class, path, lambda ts, f=field, v=value: setattr(ts, f, v))
                    failure = await refused(call, request, context=(method.full_name, shown, field))
                    assert f"{shown}.{field}" in {f for f, _ in failure.violations}, (
                        method.full_name,
                        failure.violations,
                    )
                    checked += 1
    finally:
        for channel in chans.values():
            await channel.close()
    assert checked >= 3 * 4  # StartSaga's expired_at and the step inputs' expiries among them
    assert saga_count(mesh) == before


async def test_numbers_that_would_overflow_their_column(client):
    before = await client.stock()
    for delta in (2**63 - 1, -(2**63), MAX_STOCK + 1):
        failure = await refused(
            client.inventory.AdjustStock,
            inventory_pb2.AdjustStockRequest(warehouse_id="WH-A", sku="SKU-1", delta=delta, reason="overflow"),
            context=delta,
        )
        assert [f for f, _ in failure.violations] == ["delta"]
    failure = await refused(
        client.inventory.SetStock, inventory_pb2.SetStockRequest(warehouse_id="WH-A", sku="SKU-1", on_hand=2**63 - 1)
    )
    assert [f for f, _ in failure.violations] == ["on_hand"]
    failure = await refused(
        client.warehouse.UpsertWarehouse,
        warehouse_pb2.UpsertWarehouseRequest(
            warehouse=common_pb2.Warehouse(
                warehouse_id="WH-BIG",
                name="big",
                capacity=2**63 - 1,
                status=common_pb2.WAREHOUSE_STATUS_ACTIVE,
                cost=common_pb2.CostModel(per_unit=float("nan")),
            )
        ),
    )
    assert {f for f, _ in failure.violations} == {"warehouse.capacity", "warehouse.cost.per_unit"}
    assert await client.stock() == before
    # The largest adjustment allowed still works, and is undone.
    for delta in (MAX_STOCK, -MAX_STOCK):
        await client.inventory.AdjustStock(
            inventory_pb2.AdjustStockRequest(warehouse_id="WH-A", sku="SKU-1", delta=delta), timeout=30
        )
    assert await client.stock() == before


async def test_oversized_and_poisonous_start_sagas_are_refused_and_nothing_persisted(mesh, client):
    before = saga_count(mesh)
    start = client.coordinator.StartSaga

    def request(**fields) -> pb.StartSagaRequest:
        return pb.StartSagaRequest(request=order({"SKU-1": 1}, **fields))

    deep = request()
    deep.request.metadata.CopyFrom(nested_struct(32))
    failure = await refused(start, deep, context="32-deep metadata")
    assert [f for f, _ in failure.violations] == ["request.metadata"]

    large = request()
    large.request.metadata["blob"] = "m" * (100 * 1024)
    failure = await refused(start, large, context="100 KiB metadata")
    assert [f for f, _ in failure.violations] == ["request.metadata"]

    nul_key = request()
    nul_key.request.metadata["k\x00"] = "v"
    await refused(start, nul_key, context="NUL in a metadata key")

    for size in (int(1.5 * 1024 * 1024), 8 * 1024 * 1024):
        huge = request()
        huge.request.items[0].description = "x" * size
        await refused(start, huge, grpc.StatusCode.RESOURCE_EXHAUSTED, context=size)
    # Several at once, as the 40 concurrent 7 MB calls (fewer here: the client builds them).
    huge = request()
    huge.request.items[0].description = "x" * (7 * 1000 * 1000)
    results = await asyncio.gather(*(start(huge, timeout=60) for _ in range(8)), return_exceptions=True)
    assert all(isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in results)

    # metadata.customer_location must be numbers, not silently (0, 0).
    nearest = common_pb2.ALLOCATION_STRATEGY_NEAREST
    for location, fields in (
        ({"lat": "x", "lon": "y"}, {"metadata.customer_location.lat", "metadata.customer_location.lon"}),
        ({"lat": 91.0, "lon": 0.0}, {"metadata.customer_location.lat"}),
        ({"lat": 31.2}, {"metadata.customer_location"}),
        (42.0, {"metadata.customer_location"}),
    ):
        bad = request(allocation_strategy=nearest)
        bad.request.metadata["customer_location"] = location
        failure = await refused(start, bad, context=location)
        assert fields <= {f for f, _ in failure.violations}, (location, failure.violations)

    assert saga_count(mesh) == before
    # What is accepted still is: the largest metadata the limit allows, a location as numbers.
    fine = request(allocation_strategy=nearest)
    fine.request.metadata["customer_location"] = {"lat": 31.23, "lon": 121.47}
    fine.request.metadata["notes"] = "n" * (60 * 1024)
    fine.request.metadata.get_or_create_struct("a").get_or_create_struct("b")["c"] = [1, "two"]
    reply = await start(fine, timeout=30)
    saga = await client.wait(reply.saga_id)
    assert saga.status == pb.SAGA_STATUS_COMPLETED, saga.failure
    assert saga_count(mesh) == before + 1
    assert (await client.coordinator.ListSagas(pb.ListSagasRequest(), timeout=30)).sagas
    await client.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=reply.saga_id), timeout=30)
    assert (await client.get(reply.saga_id)).reservation.state == common_pb2.RESERVATION_STATE_RELEASED


# -- the database gone --------------------------------------------------------------------------
def _database_of(url: str) -> str:
    # The path's last part; the query first, since an embedded server's ?host= is a path too.
    return url.split("?", 1)[0].rsplit("/", 1)[1]


def _cut_off(database: str, allow: bool) -> None:
    """Refuse (or allow again) new connections to ``database``; on refusing, end the open ones."""
    with psycopg.connect(support.test_admin_url(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {"true" if allow else "false"}')
        if not allow:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )


async def test_the_database_unreachable_answers_unavailable(tmp_path_factory):
    small = start_mesh(tmp_path_factory.mktemp("db-gone"), services=["coordinator", "inventory"])
    database = _database_of(small.database_url)
    coordinator = grpc.aio.insecure_channel(small.address("coordinator"))
    inventory = grpc.aio.insecure_channel(small.address("inventory"))
    try:
        from invsaga.coordinator.v1 import coordinator_pb2_grpc
        from invsaga.inventory.v1 import inventory_pb2_grpc

        sagas = coordinator_pb2_grpc.SagaCoordinatorServiceStub(coordinator)
        stock = inventory_pb2_grpc.InventoryServiceStub(inventory)
        await stock.SetStock(inventory_pb2.SetStockRequest(warehouse_id="WH-A", sku="SKU-1", on_hand=5), timeout=30)
        listed = await sagas.ListSagas(pb.ListSagasRequest(), timeout=30)
        assert not listed.sagas

        _cut_off(database, allow=False)
        try:
            # The participant: its pooled connection was ended under it.
            failure = await refused(
                stock.GetStock,
                inventory_pb2.GetStockRequest(warehouse_id="WH-A", sku="SKU-1"),
                grpc.StatusCode.UNAVAILABLE,
                context="inventory without its database",
            )
            assert failure.message == "the database is unavailable; retry later"
            assert failure.reason == "DATABASE_UNAVAILABLE"
            # The coordinator: every call, whether its pooled connection died or a new one is refused.
            for call, request in (
                (sagas.GetSaga, pb.GetSagaRequest(saga_id="no-such-saga")),
                (sagas.ListSagas, pb.ListSagasRequest()),
                (sagas.StartSaga, pb.StartSagaRequest(request=order({"SKU-1": 1}))),
                (sagas.ListSagas, pb.ListSagasRequest()),
            ):
                failure = await refused(call, request, grpc.StatusCode.UNAVAILABLE, context=type(request).__name__)
                assert failure.reason == "DATABASE_UNAVAILABLE"
        finally:
            _cut_off(database, allow=True)

        # Back: reads work again once connections can be made.
        for _ in range(300):
            try:
                level = await stock.GetStock(inventory_pb2.GetStockRequest(warehouse_id="WH-A", sku="SKU-1"), timeout=5)
                listed = await sagas.ListSagas(pb.ListSagasRequest(), timeout=5)
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), error
                assert_clean(answer_text(error), "recovering")
                await asyncio.sleep(0.2)
        else:
            pytest.fail("the services did not recover once the database was back")
        assert level.stock.on_hand == 5
        assert all(proc.poll() is None for proc in small.procs.values())  # nothing crashed meanwhile
    finally:
        await coordinator.close()
        await inventory.close()
        small.stop()
    logs = "\n".join(p.read_text(errors="replace") for p in Path(small.log_dir).glob("*.log"))
    assert "database unavailable" in logs  # what the client was not told is in the log
