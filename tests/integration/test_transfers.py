"""Transfers between warehouses (SPEC §10): the saga, its lifecycle and its refusals, on a real
mesh over PostgreSQL. Every test ends with the books: on_hand, locks, incoming and, per SKU,
Σ on_hand + in transit + discrepancies (+ what orders took) = what was put in."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2
from invsaga.logistics.v1 import logistics_pb2, logistics_pb2_grpc
from invsaga.runtime.db import conninfo
from invsaga.runtime.errors import RpcFailure
from invsaga.warehouse.v1 import warehouse_pb2
from tests.saga_support import WH, MeshClient, step_statuses
from tests.support import start_mesh

FAST_RETRY = {"INVSAGA_RETRY_INITIAL_INTERVAL": "0.05", "INVSAGA_RETRY_MAX_INTERVAL": "0.2"}
STEPS = ("ValidateTransfer", "ReserveAtSource", "OutboundPicklist", "ExpectAtDestination", "Notify")


class TransferClient(MeshClient):
    def __init__(self, mesh) -> None:
        super().__init__(mesh)
        self.logistics = logistics_pb2_grpc.LogisticsServiceStub(self.channels["logistics"])

    async def transfer(self, source: str, destination: str, items: dict[str, int], **fields) -> str:
        request = pb.TransferRequest(
            request_id=fields.pop("request_id", uuid.uuid4().hex),
            from_warehouse=source,
            to_warehouse=destination,
            items=[common_pb2.Item(product_id=f"P-{sku}", sku=sku, quantity=q) for sku, q in items.items()],
            **fields,
        )
        reply = await self.coordinator.StartTransfer(pb.StartTransferRequest(transfer=request), timeout=10)
        return reply.saga_id

    async def run_transfer(self, source: str, destination: str, items: dict[str, int], **fields) -> pb.Saga:
        return await self.wait(await self.transfer(source, destination, items, **fields))

    async def level(self, warehouse_id: str, sku: str) -> common_pb2.StockLevel:
        reply = await self.inventory.GetStock(inventory_pb2.GetStockRequest(warehouse_id=warehouse_id, sku=sku))
        return reply.stock

    async def pick(self, saga_id: str, *statuses: int) -> None:
        reply = await self.logistics.ListPicklists(logistics_pb2.ListPicklistsRequest(saga_id=saga_id))
        for picklist in reply.picklists:
            for status in statuses:
                await self.logistics.UpdatePicklistStatus(
                    logistics_pb2.UpdatePicklistStatusRequest(picklist_id=picklist.picklist_id, status=status)
                )

    async def until_state(self, saga_id: str, state: int, timeout: float = 20.0) -> pb.Saga:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            saga = await self.get(saga_id)
            if saga.transfer_state == state:
                return saga
            assert asyncio.get_running_loop().time() < deadline, pb.TransferState.Name(saga.transfer_state)
            await asyncio.sleep(0.05)

    async def receive(self, saga_id: str, received: dict[str, int]) -> pb.Saga:
        request = pb.ReceiveTransferRequest(
            transfer_id=saga_id, lines=[common_pb2.ReceivedLine(sku=s, quantity=q) for s, q in received.items()]
        )
        return (await self.coordinator.ReceiveTransfer(request, timeout=10)).saga


async def refused(call) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return RpcFailure.from_error(caught.value)


@pytest.fixture(scope="module")
def plain_mesh(tmp_path_factory):
    """The module's mesh; tests with faults start their own (``mesh_factory``) and stop it when
    they end, so that this module holds at most two meshes' connections at once."""
    mesh = start_mesh(tmp_path_factory.mktemp("transfer-plain"), env=FAST_RETRY)
    yield mesh
    mesh.stop()


@pytest.fixture(scope="module")
async def client(plain_mesh):
    c = TransferClient(plain_mesh)
    await c.seed([WH("WH-SRC"), WH("WH-DST"), WH("WH-SHUT")], [("WH-SRC", "SKU-T", 1000), ("WH-DST", "SKU-D", 10)])
    shut = await c.warehouse.GetWarehouse(warehouse_pb2.GetWarehouseRequest(warehouse_id="WH-SHUT"))
    shut.warehouse.status = common_pb2.WAREHOUSE_STATUS_CLOSED
    await c.warehouse.UpsertWarehouse(warehouse_pb2.UpsertWarehouseRequest(warehouse=shut.warehouse))
    yield c
    await c.close()


TOTALS = {"SKU-T": 1000, "SKU-D": 10}


async def test_a_transfer_end_to_end_with_a_short_receipt(client):
    c = client
    before = await c.level("WH-SRC", "SKU-T")
    saga = await c.run_transfer("WH-SRC", "WH-DST", {"SKU-T": 30}, reason="rebalance")
    assert saga.status == pb.SAGA_STATUS_COMPLETED, saga
    assert saga.kind == pb.SAGA_KIND_TRANSFER and saga.request.request_type == pb.REQUEST_TYPE_TRANSFER
    assert step_statuses(saga) == {name: "SUCCEEDED" for name in STEPS}
    assert saga.transfer_state == pb.TRANSFER_STATE_RESERVED
    assert [p.kind for p in saga.picklists] == [common_pb2.PICKLIST_KIND_TRANSFER_OUT]
    # Reserved: the source's available drops, the destination expects the units.
    src = await c.level("WH-SRC", "SKU-T")
    assert (src.on_hand, src.locked, src.available) == (before.on_hand, before.locked + 30, before.available - 30)
    dst = await c.level("WH-DST", "SKU-T")
    assert (dst.on_hand, dst.available, dst.incoming) == (0, 0, 30)
    carried = await c.warehouse.GetWarehouse(warehouse_pb2.GetWarehouseRequest(warehouse_id="WH-DST"))
    assert "SKU-T" in carried.warehouse.skus
    await c.check_books(TOTALS)

    # Shipped: the stock leaves the source and is in transit; a cancel is refused now.
    await c.pick(saga.saga_id, common_pb2.PICKLIST_STATUS_PROCESSING, common_pb2.PICKLIST_STATUS_COMPLETED)
    await c.until_state(saga.saga_id, pb.TRANSFER_STATE_IN_TRANSIT)
    src = await c.level("WH-SRC", "SKU-T")
    assert (src.on_hand, src.locked) == (before.on_hand - 30, before.locked)
    assert (await c.level("WH-DST", "SKU-T")).incoming == 30
    await c.check_books(TOTALS)
    failure = await refused(c.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id)))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TRANSFER_SHIPPED")

    # Above what was shipped: refused, nothing booked.
    failure = await refused(c.receive(saga.saga_id, {"SKU-T": 31}))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in failure.violations] == ["lines[0].quantity"]
    # 28 of 30 arrive: on_hand rises by 28, the 2 missing are a recorded discrepancy.
    answer = await c.receive(saga.saga_id, {"SKU-T": 28})
    assert answer.transfer_state == pb.TRANSFER_STATE_RECEIVED_SHORT
    [line] = answer.transfer_lines
    assert (line.quantity, line.received, line.missing) == (30, 28, 2)
    assert line.status == common_pb2.TRANSFER_LINE_STATUS_RECEIVED_SHORT
    dst = await c.level("WH-DST", "SKU-T")
    assert (dst.on_hand, dst.available, dst.incoming) == (28, 28, 0)
    await c.check_books(TOTALS)
    # The same receipt again answers as the first; another one is refused.
    again = await c.receive(saga.saga_id, {"SKU-T": 28})
    assert again.transfer_state == pb.TRANSFER_STATE_RECEIVED_SHORT
    failure = await refused(c.receive(saga.saga_id, {"SKU-T": 30}))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_RECEIVED")
    # A followed watch replays the transfer's states (PICKING shows if the coordinator read
    # the picklist's PROCESSING before its COMPLETED).
    watch = pb.WatchSagaRequest(
        saga_id=saga.saga_id, event_types=[pb.SAGA_EVENT_TYPE_TRANSFER_CHANGED], follow_reservation=True
    )
    states = [r.event.detail.reason async for r in c.coordinator.WatchSaga(watch, timeout=10)]
    assert [s for s in states if s != "PICKING"] == ["RESERVED", "IN_TRANSIT", "RECEIVED_SHORT"], states
    await c.check_books(TOTALS)


async def test_cancel_before_picking_releases_the_source(client):
    c = client
    before = await c.level("WH-SRC", "SKU-T")
    saga = await c.run_transfer("WH-SRC", "WH-DST", {"SKU-T": 7})
    assert saga.status == pb.SAGA_STATUS_COMPLETED
    assert (await c.level("WH-SRC", "SKU-T")).available == before.available - 7
    await c.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id, reason="not needed"))
    cancelled = await c.until_state(saga.saga_id, pb.TRANSFER_STATE_CANCELLED)
    assert cancelled.reservation.state == common_pb2.RESERVATION_STATE_RELEASED
    assert (await c.level("WH-SRC", "SKU-T")).available == before.available
    assert (await c.level("WH-DST", "SKU-T")).incoming == 0
    failure = await refused(c.receive(saga.saga_id, {"SKU-T": 7}))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_SHIPPED")
    await c.check_books(TOTALS)


async def test_kinds_and_idempotency(client):
    c = client
    request_id = uuid.uuid4().hex
    first = await c.transfer("WH-SRC", "WH-DST", {"SKU-T": 1}, request_id=request_id)
    assert await c.transfer("WH-SRC", "WH-DST", {"SKU-T": 1}, request_id=request_id) == first
    failure = await refused(c.transfer("WH-SRC", "WH-DST", {"SKU-T": 2}, request_id=request_id))
    assert (failure.code, failure.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    await c.wait(first)
    listed = await c.coordinator.ListSagas(pb.ListSagasRequest(kind=pb.SAGA_KIND_TRANSFER, page_size=100))
    assert first in [s.saga_id for s in listed.sagas]
    assert all(s.kind == pb.SAGA_KIND_TRANSFER for s in listed.sagas)
    await c.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=first))
    await c.until_state(first, pb.TRANSFER_STATE_CANCELLED)
    await c.check_books(TOTALS)


async def test_bad_transfers_are_refused(client):
    c = client
    count = len((await c.coordinator.ListSagas(pb.ListSagasRequest(page_size=1000))).sagas)
    for fields, field in (
        ({"source": "WH-SRC", "destination": "WH-SRC", "items": {"SKU-T": 1}}, "transfer.to_warehouse"),
        ({"source": "WH-SRC", "destination": "WH-DST", "items": {"SKU-T": 0}}, "transfer.items[0].quantity"),
        ({"source": "", "destination": "WH-DST", "items": {"SKU-T": 1}}, "transfer.from_warehouse"),
        ({"source": "WH-SRC", "destination": "WH-DST", "items": {}}, "transfer.items"),
    ):
        failure = await refused(c.transfer(fields["source"], fields["destination"], fields["items"]))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert field in [f for f, _ in failure.violations], (fields, failure.violations)
    assert len((await c.coordinator.ListSagas(pb.ListSagasRequest(page_size=1000))).sagas) == count

    # Unknown or closed warehouses and stock above what the source has: refused before anything
    # is written, with the field that is wrong.
    before = await c.level("WH-SRC", "SKU-T")
    for source, destination, items, code, reason, field in (
        ("WH-NOWHERE", "WH-DST", {"SKU-T": 1}, "INVALID_ARGUMENT", "WAREHOUSE_NOT_FOUND", "transfer.from_warehouse"),
        ("WH-SRC", "WH-NOWHERE", {"SKU-T": 1}, "INVALID_ARGUMENT", "WAREHOUSE_NOT_FOUND", "transfer.to_warehouse"),
        ("WH-SRC", "WH-SHUT", {"SKU-T": 1}, "FAILED_PRECONDITION", "WAREHOUSE_NOT_ACTIVE", "transfer.to_warehouse"),
        ("WH-SHUT", "WH-DST", {"SKU-T": 1}, "FAILED_PRECONDITION", "WAREHOUSE_NOT_ACTIVE", "transfer.from_warehouse"),
        (
            "WH-SRC",
            "WH-DST",
            {"SKU-T": 5000},
            "FAILED_PRECONDITION",
            "INSUFFICIENT_INVENTORY",
            "transfer.items[0].quantity",
        ),
        (
            "WH-SRC",
            "WH-DST",
            {"SKU-T": 1, "SKU-NONE": 2},
            "FAILED_PRECONDITION",
            "INSUFFICIENT_INVENTORY",
            "transfer.items[1].quantity",
        ),
    ):
        failure = await refused(c.transfer(source, destination, items))
        assert (failure.code.name, failure.reason) == (code, reason), (source, destination, items, failure)
        assert [f for f, _ in failure.violations] == [field], failure.violations
    assert len((await c.coordinator.ListSagas(pb.ListSagasRequest(page_size=1000))).sagas) == count
    assert await c.level("WH-SRC", "SKU-T") == before

    # A repeat of a transfer that took all the source had is answered as a repeat, not refused.
    request_id = uuid.uuid4().hex
    everything = {"SKU-T": before.available}
    saga_id = await c.transfer("WH-SRC", "WH-DST", everything, request_id=request_id)
    assert (await c.wait(saga_id)).status == pb.SAGA_STATUS_COMPLETED
    assert (await c.level("WH-SRC", "SKU-T")).available == 0
    assert await c.transfer("WH-SRC", "WH-DST", everything, request_id=request_id) == saga_id
    await c.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga_id))
    await c.until_state(saga_id, pb.TRANSFER_STATE_CANCELLED)
    failure = await refused(c.receive(uuid.uuid4().hex, {"SKU-T": 1}))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    failure = await refused(c.coordinator.StartTransfer(pb.StartTransferRequest()))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    await c.check_books(TOTALS)


TRANSFER_FAULTS = ";".join(
    f"kind=error,code=FAILED_PRECONDITION,method=Execute,step={step},times=1"
    for step in ("VALIDATE_TRANSFER", "LOCK_INVENTORY", "GENERATE_PICKLIST", "EXPECT_TRANSFER", "NOTIFY")
)


async def test_a_failure_at_each_step_compensates_the_steps_before_it_in_reverse(mesh_factory):
    c = TransferClient(mesh_factory(env={**FAST_RETRY, "INVSAGA_FAULTS": TRANSFER_FAULTS}))
    try:
        await c.seed([WH("WH-F1"), WH("WH-F2")], [("WH-F1", "SKU-F", 100)])
        # The rules fire once each, in step order: transfer k fails at step k.
        for k, step in enumerate(STEPS):
            saga = await c.run_transfer("WH-F1", "WH-F2", {"SKU-F": 5})
            got = step_statuses(saga)
            if step == "Notify":  # a notice that failed does not roll the transfer back
                assert saga.status == pb.SAGA_STATUS_COMPLETED, saga
                assert got == {**{s: "SUCCEEDED" for s in STEPS[:-1]}, "Notify": "FAILED"}
                continue
            assert saga.status == pb.SAGA_STATUS_COMPENSATED, saga
            assert saga.failure.step == step
            compensable = {"ReserveAtSource", "OutboundPicklist", "ExpectAtDestination"}
            expected = {s: ("COMPENSATED" if s in compensable else "SUCCEEDED") for s in STEPS[:k]}
            expected[step] = "FAILED"
            expected.update({s: "SKIPPED" for s in STEPS[k + 1 :]})
            assert got == expected, (step, got)
            events = await c.events(saga.saga_id, event_types=[pb.SAGA_EVENT_TYPE_STEP_COMPENSATED])
            assert [e.step for e in events] == [s for s in reversed(STEPS[:k]) if s in compensable]
            assert await c.held_locks(saga.saga_id) == []
            assert (await c.level("WH-F1", "SKU-F")).available == 100
        await c.check_books({"SKU-F": 100})
    finally:
        await c.close()


async def test_a_picklist_completed_before_the_destination_expects_the_goods(mesh_factory):
    """The outbound picklist is picked and completed while ExpectAtDestination is still on its
    way (held back 3 s): the goods left, so the lines are booked in transit, the transfer
    reaches IN_TRANSIT, and the receipt books them at the destination."""
    slow = {"INVSAGA_FAULTS": "kind=latency,delay=3,method=Execute,step=EXPECT_TRANSFER"}
    c = TransferClient(mesh_factory(env={**FAST_RETRY, **slow}))
    try:
        await c.seed([WH("WH-E1"), WH("WH-E2")], [("WH-E1", "SKU-E", 50)])
        saga_id = await c.transfer("WH-E1", "WH-E2", {"SKU-E": 10})
        for _ in range(200):
            picklists = await c.logistics.ListPicklists(logistics_pb2.ListPicklistsRequest(saga_id=saga_id))
            if picklists.picklists:
                break
            await asyncio.sleep(0.02)
        assert picklists.picklists, "no outbound picklist"
        await c.pick(saga_id, common_pb2.PICKLIST_STATUS_PROCESSING, common_pb2.PICKLIST_STATUS_COMPLETED)
        saga = await c.get(saga_id)
        assert saga.status not in TERMINAL_STATUSES, "the expectation was not held back: nothing raced"
        assert (await c.wait(saga_id)).status == pb.SAGA_STATUS_COMPLETED
        await c.until_state(saga_id, pb.TRANSFER_STATE_IN_TRANSIT)
        lines = [line for line in await c.transfer_lines() if line.transfer_id == saga_id]
        assert [(line.sku, line.quantity, line.status) for line in lines] == [
            ("SKU-E", 10, common_pb2.TRANSFER_LINE_STATUS_IN_TRANSIT)
        ]
        source, destination = await c.level("WH-E1", "SKU-E"), await c.level("WH-E2", "SKU-E")
        assert (source.on_hand, source.locked, destination.on_hand, destination.incoming) == (40, 0, 0, 10)
        await c.check_books({"SKU-E": 50})
        received = await c.receive(saga_id, {"SKU-E": 10})
        assert received.transfer_state == pb.TRANSFER_STATE_RECEIVED
        destination = await c.level("WH-E2", "SKU-E")
        assert (destination.on_hand, destination.incoming) == (10, 0)
        await c.check_books({"SKU-E": 50})
    finally:
        await c.close()


async def test_a_picklist_completed_while_the_expectation_is_being_written(mesh_factory):
    """The worst interleaving, forced: ExpectAtDestination has started writing (it waits on the
    destination's stock row, held here) while the picklist completes and its consumption
    commits at the source. The expectation must still end IN_TRANSIT, not EXPECTED for ever
    with the units gone from the source; the books reconcile."""
    slow = {"INVSAGA_FAULTS": "kind=latency,delay=1,method=Execute,step=EXPECT_TRANSFER"}
    c = TransferClient(mesh_factory(env={**FAST_RETRY, **slow}))
    totals = {"SKU-W": 40}
    try:
        await c.seed([WH("WH-W1"), WH("WH-W2")], [("WH-W1", "SKU-W", 40), ("WH-W2", "SKU-W", 0)])
        url = conninfo(c.mesh.database_url)
        with psycopg.connect(url, options="-c search_path=inventory") as hold:
            # Hold the destination's stock row: the expectation's statement will wait on it.
            hold.execute("SELECT 1 FROM stock WHERE warehouse_id = 'WH-W2' AND sku = 'SKU-W' FOR UPDATE")
            saga_id = await c.transfer("WH-W1", "WH-W2", {"SKU-W": 15})
            with psycopg.connect(url, autocommit=True) as look:
                for _ in range(400):
                    waiting = look.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE '%transfer_lines%' AND datname = current_database()"
                    ).fetchone()
                    if waiting and waiting[0]:
                        break
                    await asyncio.sleep(0.025)
                else:
                    raise AssertionError("the expectation never started writing")
            shipping = asyncio.ensure_future(
                c.pick(saga_id, common_pb2.PICKLIST_STATUS_PROCESSING, common_pb2.PICKLIST_STATUS_COMPLETED)
            )
            await asyncio.sleep(0.5)  # let the consumption go as far as it can
            hold.rollback()
        await asyncio.wait_for(shipping, 20)
        saga = await c.wait(saga_id)
        assert saga.status == pb.SAGA_STATUS_COMPLETED, saga
        await c.until_state(saga_id, pb.TRANSFER_STATE_IN_TRANSIT)
        [line] = [line for line in await c.transfer_lines() if line.transfer_id == saga_id]
        assert (line.status, line.quantity) == (common_pb2.TRANSFER_LINE_STATUS_IN_TRANSIT, 15)
        src, dst = await c.level("WH-W1", "SKU-W"), await c.level("WH-W2", "SKU-W")
        assert (src.on_hand, src.locked, dst.on_hand, dst.incoming) == (25, 0, 0, 15)
        await c.check_books(totals)
        answer = await c.receive(saga_id, {"SKU-W": 15})
        assert answer.transfer_state == pb.TRANSFER_STATE_RECEIVED
        assert (await c.level("WH-W2", "SKU-W")).on_hand == 15
        await c.check_books(totals)
    finally:
        await c.close()


TERMINAL_STATUSES = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED)


GRPCURL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "grpcurl"
SERVICE = "invsaga.coordinator.v1.SagaCoordinatorService"


def grpcurl(address: str, method: str, body: dict) -> dict:
    done = subprocess.run(
        [str(GRPCURL), "-plaintext", "-max-time", "30", "-d", json.dumps(body), address, f"{SERVICE}/{method}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_a_transfer_through_grpcurl_and_through_the_cli(client, tmp_path):
    c = client
    address = c.mesh.address("coordinator")
    before = await c.level("WH-SRC", "SKU-T")
    started = grpcurl(
        address,
        "StartTransfer",
        {
            "transfer": {
                "from_warehouse": "WH-SRC",
                "to_warehouse": "WH-DST",
                "items": [{"sku": "SKU-T", "quantity": 4}],
            }
        },
    )
    saga = await c.wait(started["saga_id"])
    assert saga.status == pb.SAGA_STATUS_COMPLETED
    got = grpcurl(address, "GetSaga", {"saga_id": saga.saga_id})["saga"]
    assert (got["kind"], got["transfer_state"]) == ("SAGA_KIND_TRANSFER", "TRANSFER_STATE_RESERVED")
    assert (await c.level("WH-SRC", "SKU-T")).available == before.available - 4
    await c.pick(saga.saga_id, common_pb2.PICKLIST_STATUS_PROCESSING, common_pb2.PICKLIST_STATUS_COMPLETED)
    await c.until_state(saga.saga_id, pb.TRANSFER_STATE_IN_TRANSIT)
    received = grpcurl(
        address, "ReceiveTransfer", {"transfer_id": saga.saga_id, "lines": [{"sku": "SKU-T", "quantity": 4}]}
    )
    assert received["saga"]["transfer_state"] == "TRANSFER_STATE_RECEIVED"
    await c.check_books(TOTALS)

    # The same through the CLI: a YAML file, --watch, then the receipt (short by one).
    spec = tmp_path / "transfer.yaml"
    spec.write_text(
        "from_warehouse: WH-SRC\nto_warehouse: WH-DST\nreason: restock\nitems:\n  - {sku: SKU-T, quantity: 3}\n"
    )
    dst_before = await c.level("WH-DST", "SKU-T")
    started_cli = cli("transfer", str(spec), "--watch", "--coordinator", address)
    assert started_cli.returncode == 0, started_cli.stderr
    saga_id = started_cli.stdout.splitlines()[0].strip()
    assert "RESERVED" in started_cli.stdout
    await c.pick(saga_id, common_pb2.PICKLIST_STATUS_PROCESSING, common_pb2.PICKLIST_STATUS_COMPLETED)
    await c.until_state(saga_id, pb.TRANSFER_STATE_IN_TRANSIT)
    done = cli("receive", saga_id, "SKU-T=2", "--coordinator", address)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RECEIVED_SHORT" in done.stdout and "1 missing" in done.stdout
    assert (await c.level("WH-DST", "SKU-T")).on_hand == dst_before.on_hand + 2
    bad = cli("receive", saga_id, "SKU-T", "--coordinator", address)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    await c.check_books(TOTALS)


def cli(*args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    return subprocess.run(
        [sys.executable, "-m", "invsaga.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "COLUMNS": "200"},
    )
