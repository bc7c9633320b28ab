"""The one mapping of errors to statuses, and the checks every request passes first.

In one process: ``errors.as_domain_error`` on the driver's exceptions; a real grpc.aio server
with the bootstrap's ``DomainErrorInterceptor`` (unexpected exceptions → INTERNAL with an id
that is in the log, content and size checks before the servicer, the in-flight budget, and
the same for each request of an ExecuteStream message); the content rules, page
tokens, the customer location of a StartSaga, the size settings.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re

import grpc
import psycopg
import psycopg_pool
import pytest
import sqlalchemy.exc as sa
from google.rpc import error_details_pb2, status_pb2

from coordinator import validation
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.runtime import inputs
from invsaga.runtime.batch import layered_execute
from invsaga.runtime.config import ConfigError, Settings, load_settings, parse_bytes
from invsaga.runtime.convert import MAX_PAGE_OFFSET, page_window
from invsaga.runtime.errors import DATABASE_UNAVAILABLE, InvalidArgument, RpcFailure, as_domain_error
from invsaga.runtime.server import DomainErrorInterceptor, RequestGuard, receive_limit
from invsaga.runtime.stream import install_execute_stream
from services.inventory import logic as inventory_logic
from services.warehouse import logic as warehouse_logic
from tests.saga_support import order

SECRET_SQL = 'SELECT on_hand FROM stock WHERE sku = %s -- at "127.0.0.1", port 5432'
LEAKS = re.compile(r"SELECT|FROM|127\.0\.0\.1|5432|psycopg|sqlalchemy|<class|[A-Z][a-z]+Error|Traceback")


def _text(status: grpc.Status) -> str:
    parts = [status.details]
    for key, value in status.trailing_metadata:
        if key == "grpc-status-details-bin":
            decoded = status_pb2.Status.FromString(value)
            parts.append(decoded.message)
            for detail in decoded.details:
                for kind in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo):
                    if detail.Is(kind.DESCRIPTOR):
                        message = kind()
                        detail.Unpack(message)
                        parts.append(str(message))
    return "\n".join(parts)


# -- the mapping --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError(f"connection failed: {SECRET_SQL}"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg_pool.PoolTimeout("couldn't get a connection after 60.00 sec"),
        psycopg_pool.PoolClosed("the pool 'db-inventory' is already closed"),
        sa.OperationalError(SECRET_SQL, {"sku": "x"}, psycopg.OperationalError("server closed the connection")),
        sa.DBAPIError(SECRET_SQL, None, Exception("gone"), connection_invalidated=True),
        sa.TimeoutError("QueuePool limit of size 12 overflow 0 reached"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_database_unavailable_is_unavailable_in_plain_words(error, caplog):
    with caplog.at_level(logging.WARNING, logger="invsaga.errors"):
        mapped = as_domain_error(error, "/invsaga.inventory.v1.InventoryService/GetStock")
    assert mapped.code == grpc.StatusCode.UNAVAILABLE
    assert mapped.message == DATABASE_UNAVAILABLE and mapped.reason == "DATABASE_UNAVAILABLE"
    assert not LEAKS.search(_text(mapped.to_status()))
    assert "GetStock" in caplog.text  # the operator learns where, and what (below the client's view)


def test_other_outages_are_unavailable_too():
    for error in (
        ConnectionRefusedError(111, "Connection refused 127.0.0.1:5432"),
        ConnectionError("the statement pipe stopped"),
    ):
        mapped = as_domain_error(error)
        assert mapped.code == grpc.StatusCode.UNAVAILABLE and not LEAKS.search(_text(mapped.to_status()))
    downstream = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="failed to connect to all addresses; 127.0.0.1:5432",
    )
    mapped = as_domain_error(downstream)
    assert mapped.code == grpc.StatusCode.UNAVAILABLE and not LEAKS.search(_text(mapped.to_status()))


@pytest.mark.parametrize(
    "error, description",
    [
        (
            psycopg.errors.NumericValueOutOfRange(f"bigint out of range; {SECRET_SQL}"),
            "a number is out of range for its column",
        ),
        (
            psycopg.errors.StringDataRightTruncation("value too long for type character varying(64)"),
            "a text is longer than its column allows",
        ),
        (
            psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
            "must not contain NUL (\\x00) characters",
        ),
        (
            sa.DataError(SECRET_SQL, {"d": 2**63}, psycopg.errors.NumericValueOutOfRange("bigint out of range")),
            "a number is out of range for its column",
        ),
    ],
    ids=["numeric", "truncation", "nul", "sqlalchemy"],
)
def test_values_refused_late_are_invalid_argument_with_a_field_violation(error, description):
    mapped = as_domain_error(error)
    assert mapped.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [d for _, d in mapped.violations] == [description]
    assert not LEAKS.search(_text(mapped.to_status()))


def test_anything_else_is_internal_with_an_id_that_the_log_has_in_full(caplog):
    try:
        raise KeyError(SECRET_SQL)
    except KeyError as error:
        with caplog.at_level(logging.ERROR, logger="invsaga.errors"):
            mapped = as_domain_error(error, "/svc/Method")
    assert mapped.code == grpc.StatusCode.INTERNAL
    error_id = mapped.metadata["error_id"]
    assert re.fullmatch(r"[0-9a-f]{16}", error_id) and mapped.message == f"internal error, id {error_id}"
    assert not LEAKS.search(_text(mapped.to_status()))
    record = next(r for r in caplog.records if error_id in r.getMessage())
    assert record.levelno == logging.ERROR and record.exc_info and "127.0.0.1" in caplog.text
    assert as_domain_error(RuntimeError("x")).metadata["error_id"] != error_id


def test_a_status_fits_the_trailers_however_many_violations():
    many = InvalidArgument("x" * 10_000, violations=[(f"items[{i}].sku", "é" * 600) for i in range(5_000)])
    status = many.to_status()
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert len(details) < 6 * 1024 and len(status.details) <= 1024
    bad = error_details_pb2.BadRequest()
    status_pb2.Status.FromString(details).details[0].Unpack(bad)
    assert bad.field_violations[0].field == "items[0].sku"
    assert (
        bad.field_violations[-1].description.startswith("and ")
        and "more violation" in bad.field_violations[-1].description
    )


# -- over a grpc.aio server with the bootstrap's interceptor ------------------------------------
class StepServicer(inventory_pb2_grpc.InventoryStepServiceServicer):
    """Execute: order_id says what happens. "boom" raises an unexpected error with SQL in it,
    "wait" waits for ``release``; anything else answers."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def Execute(self, request, context):
        self.calls += 1
        order_id = request.lock_inventory.order_id
        if order_id == "boom":
            raise RuntimeError(SECRET_SQL)
        if order_id == "wait":
            self.waiting.set()
            await self.release.wait()
        return inventory_pb2.ExecuteResponse()


@pytest.fixture
async def step_server():
    """A server as the bootstrap builds one: the interceptor and ExecuteStream."""
    settings = Settings(
        service="inventory", port=0, max_step_request_bytes=64 * 1024, max_inflight_request_bytes=16 * 1024
    )
    guard = RequestGuard(settings)
    interceptor = DomainErrorInterceptor(guard)
    servicer = StepServicer()
    name = "invsaga.inventory.v1.InventoryStepService"
    execute = layered_execute(servicer, name, [interceptor])
    install_execute_stream(servicer, name, execute, guard.budget)
    server = grpc.aio.server(interceptors=[interceptor])
    inventory_pb2_grpc.add_InventoryStepServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield inventory_pb2_grpc.InventoryStepServiceStub(channel), servicer, guard
    finally:
        await channel.close()
        await server.stop(0)


async def drained(budget) -> bool:
    """Whether the in-flight budget is back to 0 within a second: the server gives a request's
    bytes back just after its status went out, so the caller may see the status first."""
    for _ in range(100):
        if budget.used == 0:
            return True
        await asyncio.sleep(0.01)
    return budget.used == 0


def _execute(order_id: str = "", saga_id: str = "s-1", description_bytes: int = 0) -> inventory_pb2.ExecuteRequest:
    request = inventory_pb2.ExecuteRequest(
        context=common_pb2.StepContext(saga_id=saga_id, step=common_pb2.SAGA_STEP_LOCK_INVENTORY),
        lock_inventory=inventory_pb2.LockInventoryInput(order_id=order_id),
    )
    if description_bytes:
        request.lock_inventory.allocation_id = "a" * description_bytes
    return request


async def test_an_unexpected_error_is_internal_with_an_id(step_server, caplog):
    stub, servicer, guard = step_server
    with caplog.at_level(logging.ERROR, logger="invsaga.errors"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Execute(_execute("boom"), timeout=10)
    failure = RpcFailure.from_error(caught.value)
    assert failure.code == grpc.StatusCode.INTERNAL and failure.reason == "INTERNAL_ERROR"
    assert failure.message == f"internal error, id {failure.metadata['error_id']}"
    assert not LEAKS.search(failure.message + str(caught.value.trailing_metadata()))
    assert failure.metadata["error_id"] in caplog.text and "SELECT on_hand" in caplog.text
    assert await drained(guard.budget)


async def test_content_and_size_are_refused_before_the_servicer(step_server):
    stub, servicer, guard = step_server
    for request, code, field in (
        (_execute(saga_id="s\x00"), grpc.StatusCode.INVALID_ARGUMENT, "context.saga_id"),
        (_execute(description_bytes=70 * 1024), grpc.StatusCode.RESOURCE_EXHAUSTED, None),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Execute(request, timeout=10)
        failure = RpcFailure.from_error(caught.value)
        assert failure.code == code, failure
        if field:
            assert failure.violations[0][0] == field
        else:
            assert failure.reason == "REQUEST_TOO_LARGE" and failure.metadata["limit"] == str(64 * 1024)
    expiring = _execute()
    expiring.lock_inventory.expires_at.seconds = 2**62
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Execute(expiring, timeout=10)
    assert RpcFailure.from_error(caught.value).violations[0][0] == "lock_inventory.expires_at.seconds"
    assert servicer.calls == 0 and await drained(guard.budget)


async def test_each_request_of_a_stream_message_is_mapped_on_its_own(step_server):
    stub, servicer, guard = step_server
    requests = [_execute(), _execute("boom"), _execute(saga_id="s\x00")]

    def check(results) -> None:
        ok, boom, nul = results
        assert ok.HasField("response")
        assert boom.error.code == grpc.StatusCode.INTERNAL.value[0] and boom.error.message.startswith(
            "internal error, id "
        )
        assert nul.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        for result in (boom, nul):
            assert not LEAKS.search(str(result.error))

    async def messages():
        yield inventory_pb2.ExecuteStreamRequest(id=1, requests=requests)

    answers = [a async for a in stub.ExecuteStream(messages(), timeout=10)]
    assert [a.id for a in answers] == [1]
    check(answers[0].results)
    assert await drained(guard.budget)


async def test_past_the_in_flight_budget_a_call_is_refused_until_bytes_are_given_back(step_server):
    stub, servicer, guard = step_server
    held = asyncio.ensure_future(stub.Execute(_execute("wait", description_bytes=10 * 1024), timeout=10))
    await asyncio.wait_for(servicer.waiting.wait(), 10)
    assert guard.budget.used > 10 * 1024
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Execute(_execute(description_bytes=8 * 1024), timeout=10)
    failure = RpcFailure.from_error(caught.value)
    assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED and failure.reason == "SERVER_BUSY"

    async def messages():
        yield inventory_pb2.ExecuteStreamRequest(id=2, requests=[_execute(description_bytes=8 * 1024)])

    answers = [a async for a in stub.ExecuteStream(messages(), timeout=10)]
    assert answers[0].results[0].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    await stub.Execute(_execute(), timeout=10)  # a small one still fits
    servicer.release.set()
    await held
    assert await drained(guard.budget)
    await stub.Execute(_execute(description_bytes=8 * 1024), timeout=10)


def test_the_coordinator_receives_at_most_its_largest_limit():
    settings = Settings(service="coordinator", port=0)
    assert receive_limit(settings, ["invsaga.coordinator.v1.SagaCoordinatorService"]) == 1024 * 1024
    participant = ["invsaga.inventory.v1.InventoryService", "invsaga.inventory.v1.InventoryStepService"]
    assert receive_limit(settings, participant) == 8 * 1024 * 1024


# -- the rules ----------------------------------------------------------------------------------
def test_timestamps_at_and_past_the_bounds():
    checker = inputs.ContentChecker()
    request = pb.StartSagaRequest(request=order({"SKU-1": 1}))
    for seconds, nanos, ok in (
        (inputs.MIN_SECONDS, 0, True),
        (inputs.MAX_SECONDS, 999_999_999, True),
        (inputs.MIN_SECONDS - 1, 0, False),
        (inputs.MAX_SECONDS + 1, 0, False),
        (0, -5, False),
        (0, 1_000_000_000, False),
        (2**62, 0, False),
    ):
        request.request.expired_at.seconds, request.request.expired_at.nanos = seconds, nanos
        assert (checker.violations(request, False) == []) == ok, (seconds, nanos)


def test_structs_are_bounded_in_bytes_and_depth_and_free_of_nul():
    checker = inputs.ContentChecker(struct_bytes=1024, struct_depth=3)
    request = pb.StartSagaRequest(request=order({"SKU-1": 1}))
    request.request.metadata.get_or_create_struct("a").get_or_create_struct("b")["c"] = 1
    assert inputs.struct_depth(request.request.metadata) == 3 and checker.violations(request) == []
    request.request.metadata["a"]["b"]["c"] = [1]
    assert checker.violations(request) == [("request.metadata", "nested at most 3 levels deep")]
    request.request.metadata.Clear()
    request.request.metadata["blob"] = "x" * 2000
    assert checker.violations(request)[0][0] == "request.metadata"
    request.request.metadata.Clear()
    request.request.metadata["list"] = ["ok", "n\x00"]
    assert checker.violations(request, True) == [("request.metadata", "must not contain NUL (\\x00) characters")]


def test_page_tokens():
    def token(offset) -> str:
        return base64.urlsafe_b64encode(str(offset).encode()).decode()

    assert page_window(10, token(MAX_PAGE_OFFSET)) == (MAX_PAGE_OFFSET, 10)
    for bad in (token(MAX_PAGE_OFFSET + 1), token(10**20), token(-3), token("1_000"), "%%%", "a" * 100, token("١٢")):
        with pytest.raises(InvalidArgument) as caught:
            page_window(10, bad)
        assert caught.value.violations == [("page_token", "not a token from this API")]


@pytest.mark.parametrize(
    "location, fields",
    [
        ({"lat": "x", "lon": "y"}, ["metadata.customer_location.lat", "metadata.customer_location.lon"]),
        ({"lat": 31.2}, ["metadata.customer_location"]),
        ({"lat": 91.0, "lon": 0.0}, ["metadata.customer_location.lat"]),
        ({"address": 7}, ["metadata.customer_location.address"]),
        (True, ["metadata.customer_location"]),
    ],
)
def test_a_customer_location_in_metadata_is_numbers_or_refused(location, fields):
    request = order({"SKU-1": 1})
    request.metadata["customer_location"] = location
    with pytest.raises(InvalidArgument) as caught:
        validation.normalize(request)
    assert [f for f, _ in caught.value.violations] == fields


def test_a_customer_location_in_metadata_still_works():
    request = order({"SKU-1": 1}, allocation_strategy=common_pb2.ALLOCATION_STRATEGY_NEAREST)
    request.metadata["customer_location"] = {"lat": 31.2, "lon": 121.5, "address": "Shanghai"}
    normalized = validation.normalize(request)
    assert normalized is request  # normalized in place: a large StartSaga is not copied again
    assert (normalized.customer_location.lat, normalized.customer_location.lon) == (31.2, 121.5)
    request = order({"SKU-1": 1}, allocation_strategy=common_pb2.ALLOCATION_STRATEGY_PRIORITY)
    request.metadata["customer_location"] = None  # null: no location (PRIORITY needs none)
    assert not validation.normalize(request).HasField("customer_location")


def test_numbers_bounded_by_their_columns():
    with pytest.raises(InvalidArgument):
        inventory_logic.validate_adjust_stock(
            inventory_pb2.AdjustStockRequest(warehouse_id="W", sku="S", delta=2**63 - 1)
        )
    with pytest.raises(InvalidArgument):
        inventory_logic.validate_set_stock(inventory_pb2.SetStockRequest(warehouse_id="W", sku="S", on_hand=2**63 - 1))
    inventory_logic.validate_adjust_stock(
        inventory_pb2.AdjustStockRequest(warehouse_id="W", sku="S", delta=-inventory_logic.MAX_STOCK)
    )
    warehouse = common_pb2.Warehouse(
        warehouse_id="W",
        name="W",
        capacity=2**62,
        status=common_pb2.WAREHOUSE_STATUS_ACTIVE,
        cost=common_pb2.CostModel(per_km_unit=float("inf")),
    )
    with pytest.raises(InvalidArgument) as caught:
        warehouse_logic.validate_warehouse(warehouse)
    assert {f for f, _ in caught.value.violations} == {"warehouse.capacity", "warehouse.cost.per_km_unit"}


def test_size_settings():
    assert parse_bytes("64KiB", name="x") == 65536 and parse_bytes("1MiB", name="x") == 1048576
    assert parse_bytes(4096, name="x") == 4096 and parse_bytes("2 MB", name="x") == 2_000_000
    for bad in ("", "lots", "-1", "0", "1.5MiB", True):
        with pytest.raises(ConfigError):
            parse_bytes(bad, name="INVSAGA_MAX_REQUEST_BYTES")
    settings = load_settings(
        "coordinator", env={"INVSAGA_MAX_START_SAGA_BYTES": "2MiB", "INVSAGA_MAX_METADATA_DEPTH": "4"}
    )
    assert settings.max_start_saga_bytes == 2 * 1024 * 1024 and settings.max_metadata_depth == 4
    assert load_settings("coordinator", env={}).max_metadata_bytes == 64 * 1024
