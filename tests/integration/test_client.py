"""invsaga.client against a real mesh: reserve and wait, a watch that survives the coordinator's
SIGKILL, errors as InvsagaError, cancel and extend, credentials. Every test that moves stock ends
with the books reconciled against the reservations."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Sequence

import grpc
import pytest

from invsaga.client import AsyncClient, Client, InvsagaError, RetryPolicy, TERMINAL_EVENTS
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.security import hash_token
from tests.saga_support import WH, MeshClient, order
from tests.support import logs_tail, start_mesh

ENV = {
    "INVSAGA_LEASE": "1s",
    "INVSAGA_RECOVERY_INTERVAL": "300ms",
    "INVSAGA_RETRY_INITIAL_INTERVAL": "20ms",
    "INVSAGA_RETRY_MAX_INTERVAL": "200ms",
    # A slow picking step keeps every saga in flight for a while: long enough to kill the
    # coordinator in the middle of a watch, or to cancel a running saga.
    "INVSAGA_FAULTS": "kind=latency,delay=1.5,method=Execute,step=GENERATE_PICKLIST",
}
WAREHOUSES = [WH("WH-C1", priority=9), WH("WH-C2", priority=5)]
SKUS = ("SKU-C1", "SKU-C2", "SKU-C3")
STOCK = [(w.warehouse_id, sku, 500) for w in WAREHOUSES for sku in SKUS]
RETRY = RetryPolicy(max_backoff=0.5, watch_reconnect_timeout=90.0)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """One mesh for the module (each test its own orders); seeded with stock."""
    mesh = start_mesh(tmp_path_factory.mktemp("client"), env=ENV)

    async def seed() -> None:
        c = MeshClient(mesh)
        try:
            await c.seed(WAREHOUSES, STOCK)
        finally:
            await c.close()

    try:
        asyncio.run(seed())
        yield mesh
    except BaseException:
        print(logs_tail(mesh))
        raise
    finally:
        mesh.stop()


async def check_books(mesh, released: Sequence[str] = ()) -> None:
    """The books balance exactly: nothing was picked, so on_hand is still the seeded stock, and
    locked is what the RESERVED reservations of COMPLETED sagas hold (a released or rolled-back
    saga holds nothing)."""
    locked: Counter[tuple[str, str]] = Counter()
    async with AsyncClient(mesh.address("coordinator")) as client:
        async for saga in client.list(status="COMPLETED"):
            states = {w.warehouse_id: w.state for w in saga.reservation.warehouses}
            for line in saga.allocation.lines:
                if states[line.warehouse_id] == common_pb2.RESERVATION_STATE_RESERVED:
                    locked[(line.warehouse_id, line.sku)] += line.quantity
    seeded = {(w, sku): n for w, sku, n in STOCK}
    c = MeshClient(mesh)
    try:
        for saga_id in released:
            assert await c.held_locks(saga_id) == [], saga_id
        for s in await c.stock():
            key = (s.warehouse_id, s.sku)
            assert (s.on_hand, s.locked) == (seeded[key], locked[key]), (key, s)
        await c.check_books()
    finally:
        await c.close()


def order_dict(quantity: int = 2, sku: str = "SKU-C1", **fields) -> dict:
    """A StartSaga request as a caller writes it: the proto's field names, short enum names."""
    return {
        "request_id": f"req-{uuid.uuid4().hex}",
        "order_id": f"ORD-{uuid.uuid4().hex[:8]}",
        "customer_id": "CUST-CLIENT",
        "allocation_strategy": "PRIORITY",
        "items": [{"product_id": f"P-{sku}", "sku": sku, "quantity": quantity, "unit": "pcs"}],
        **fields,
    }


def restart_coordinator(mesh, after: float) -> threading.Thread:
    """Start the killed coordinator again on its port, ``after`` seconds from now (in a thread)."""

    def run() -> None:
        time.sleep(after)
        mesh.start_one("coordinator")
        mesh.wait_ready("coordinator")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def seqs(events: list[pb.SagaEvent]) -> list[int]:
    return [e.seq for e in events]


# -- (1) reserve, then wait ---------------------------------------------------------------------
def test_sync_reserve_twice_is_one_saga_and_wait_returns_it_completed(mesh):
    request = order_dict(quantity=3)
    with Client(mesh.address("coordinator"), retry=RETRY) as client:
        saga = client.reserve(request)
        again = client.reserve(request)  # the order service retried: the same saga, nothing more reserved
        assert again.saga_id == saga.saga_id
        final = client.wait(saga.saga_id, timeout=60)
        events = list(client.watch(saga.saga_id))
        found = list(client.list(order_id=request["order_id"]))
    assert final.status == pb.SAGA_STATUS_COMPLETED, final.failure
    assert sum(line.quantity for line in final.allocation.lines) == 3
    assert final.reservation.state == common_pb2.RESERVATION_STATE_RESERVED
    assert seqs(events) == list(range(1, len(events) + 1))
    assert events[-1].type == pb.SAGA_EVENT_TYPE_SAGA_COMPLETED
    assert [s.saga_id for s in found] == [saga.saga_id]
    asyncio.run(check_books(mesh))


async def test_async_reserve_wait_list_and_pages(mesh):
    orders = [order(items={"SKU-C2": 1 + k}, customer_id=f"CUST-{uuid.uuid4().hex[:8]}") for k in range(3)]
    customer = orders[0].customer_id
    for o in orders:
        o.customer_id = customer
    async with AsyncClient(mesh.address("coordinator"), retry=RETRY) as client:
        started = [await client.reserve(o) for o in orders]
        finals = await asyncio.gather(*(client.wait(s.saga_id, timeout=60) for s in started))
        listed = [s.saga_id async for s in client.list(customer_id=customer, page_size=2)]
        first = await client.list_page(customer_id=customer, page_size=2)
        second = await client.list_page(customer_id=customer, page_size=2, page_token=first.next_page_token)
        completed = [s async for s in client.list(customer_id=customer, status="COMPLETED", limit=1)]
    assert [f.status for f in finals] == [pb.SAGA_STATUS_COMPLETED] * 3, [f.failure for f in finals]
    assert sorted(listed) == sorted(s.saga_id for s in started)
    assert len(first.sagas) == 2 and first.next_page_token
    assert len(second.sagas) == 1 and not second.next_page_token
    assert len(completed) == 1
    await check_books(mesh)


# -- (2) a watch survives the coordinator's SIGKILL -------------------------------------------
def _picking(event: pb.SagaEvent) -> bool:
    return event.type == pb.SAGA_EVENT_TYPE_STEP_STARTED and event.step == "GeneratePicklist"


async def test_async_watch_survives_a_coordinator_sigkill_and_yields_each_event_once_in_order(mesh):
    async with AsyncClient(mesh.address("coordinator"), retry=RETRY) as client:
        saga = await client.reserve(order_dict(sku="SKU-C3"))
        seen: list[pb.SagaEvent] = []
        restart = None
        async for event in client.watch(saga.saga_id):
            seen.append(event)
            if restart is None and _picking(event):  # mid-saga: the picking step takes 1.5 s
                assert mesh.kill("coordinator") != 0
                restart = restart_coordinator(mesh, after=1.0)  # the watch reconnects with backoff meanwhile
        assert restart is not None, "the watch never saw the picking step start"
        restart.join(60)
        replay = [e async for e in client.watch(saga.saga_id)]  # a fresh, whole watch
        final = await client.get(saga.saga_id)
    assert seen == replay  # the same events, field for field
    assert seqs(seen) == list(range(1, len(seen) + 1))  # in order, no gap, no repeat
    assert pb.SAGA_EVENT_TYPE_SAGA_RECOVERED in [e.type for e in seen]  # the kill came mid-saga
    assert seen[-1].type in TERMINAL_EVENTS and final.status == pb.SAGA_STATUS_COMPLETED, final.failure
    await check_books(mesh)


def test_sync_watch_and_a_read_survive_a_coordinator_sigkill(mesh):
    with Client(mesh.address("coordinator"), retry=RETRY) as client:
        saga = client.reserve(order_dict(sku="SKU-C3", quantity=4))
        seen: list[pb.SagaEvent] = []
        restart = None
        for event in client.watch(saga.saga_id):
            seen.append(event)
            if restart is None and _picking(event):
                assert mesh.kill("coordinator") != 0
                restart = restart_coordinator(mesh, after=1.0)
                # A read while the coordinator is down: retried (UNAVAILABLE) until it is back.
                assert client.get(saga.saga_id).saga_id == saga.saga_id
        assert restart is not None, "the watch never saw the picking step start"
        restart.join(60)
        replay = list(client.watch(saga.saga_id))
        assert client.get(saga.saga_id).status == pb.SAGA_STATUS_COMPLETED
    assert seen == replay
    assert seqs(seen) == list(range(1, len(seen) + 1))
    assert pb.SAGA_EVENT_TYPE_SAGA_RECOVERED in [e.type for e in seen]
    asyncio.run(check_books(mesh))


# -- (3) errors ---------------------------------------------------------------------------------
def test_bad_input_is_an_invsaga_error_with_its_field_violations(mesh):
    bad = order_dict(priority=11)
    bad["items"][0]["quantity"] = 0
    with Client(mesh.address("coordinator"), retry=RETRY) as client:
        with pytest.raises(InvsagaError) as caught:
            client.reserve(bad)
        error = caught.value
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        fields = {v.field for v in error.violations}
        assert {"items[0].quantity", "priority"} <= fields, error.violations
        assert list(client.list(order_id=bad["order_id"])) == []  # a refused request persists nothing

        # No request_id: refused by the client itself, before any call.
        anonymous = order_dict()
        del anonymous["request_id"]
        with pytest.raises(InvsagaError) as caught:
            client.reserve(anonymous)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in caught.value.violations] == ["request_id"]
        assert list(client.list(order_id=anonymous["order_id"])) == []

        # The same request_id for another order: ALREADY_EXISTS, naming the first saga.
        first = order_dict()
        saga = client.reserve(first)
        with pytest.raises(InvsagaError) as caught:
            client.reserve({**first, "order_id": "ORD-SOMETHING-ELSE"})
        assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS
        assert caught.value.reason == "REQUEST_ID_REUSED" and caught.value.saga_id == saga.saga_id

        with pytest.raises(InvsagaError) as caught:
            client.get(uuid.uuid4().hex)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(InvsagaError) as caught:
            list(client.watch(uuid.uuid4().hex))
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert client.wait(saga.saga_id, timeout=60).status == pb.SAGA_STATUS_COMPLETED
    asyncio.run(check_books(mesh))


async def test_a_short_order_compensates_with_its_shortage(mesh):
    async with AsyncClient(mesh.address("coordinator"), retry=RETRY) as client:
        saga = await client.reserve(order_dict(quantity=100_000))
        final = await client.wait(saga.saga_id, timeout=60)
    assert final.status == pb.SAGA_STATUS_COMPENSATED
    assert final.failure.reason == "INSUFFICIENT_INVENTORY" and final.failure.shortages
    await check_books(mesh, released=[saga.saga_id])


# -- (4) cancel and extend ----------------------------------------------------------------------
async def test_extend_then_cancel_a_reservation_through_the_client(mesh):
    async with AsyncClient(mesh.address("coordinator"), retry=RETRY) as client:
        saga = await client.wait((await client.reserve(order_dict(quantity=5))).saga_id, timeout=60)
        assert saga.status == pb.SAGA_STATUS_COMPLETED, saga.failure
        before = saga.reservation.expires_at.ToDatetime(tzinfo=timezone.utc)

        until = datetime.now(timezone.utc) + timedelta(hours=2)
        reservation = await client.extend(saga.saga_id, until)
        assert reservation.expires_at.ToDatetime(tzinfo=timezone.utc) > before
        assert abs((reservation.expires_at.ToDatetime(tzinfo=timezone.utc) - until).total_seconds()) < 1
        with pytest.raises(InvsagaError) as caught:  # not later than the current expiry
            await client.extend(saga.saga_id, timedelta(minutes=1))
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and caught.value.violations

        answer = await client.cancel(saga.saga_id, reason="customer changed their mind")
        assert answer.reservation.state == common_pb2.RESERVATION_STATE_RELEASED
        # Followed to the end of the reservation: extended, then released; the stream ends.
        events = [e async for e in client.watch(saga.saga_id, follow_reservation=True, timeout=30)]
        final = await client.get(saga.saga_id)
    types = [e.type for e in events]
    assert pb.SAGA_EVENT_TYPE_RESERVATION_EXTENDED in types
    assert events[-1].reservation_state == common_pb2.RESERVATION_STATE_RELEASED
    assert final.cancel_reason == "customer changed their mind"
    await check_books(mesh, released=[saga.saga_id])


def test_cancel_a_running_saga_through_the_client(mesh):
    with Client(mesh.address("coordinator"), retry=RETRY) as client:
        saga = client.reserve(order_dict(quantity=6, sku="SKU-C2"))
        for event in client.watch(saga.saga_id, event_types=["STEP_STARTED"]):
            if event.step == "GeneratePicklist":  # stock locked, picking under way (1.5 s)
                client.cancel(saga.saga_id, reason="order withdrawn")
        final = client.wait(saga.saga_id, timeout=60)
        with pytest.raises(InvsagaError) as caught:  # only a FAILED saga can be resumed
            client.resume(saga.saga_id)
    assert final.status == pb.SAGA_STATUS_COMPENSATED, final
    assert final.failure.reason == "CANCELLED"
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION and caught.value.reason == "SAGA_NOT_FAILED"
    asyncio.run(check_books(mesh, released=[saga.saga_id]))


def test_wait_gives_up_at_its_deadline(mesh):
    with Client(mesh.address("coordinator"), retry=RETRY) as client:
        saga = client.reserve(order_dict())
        with pytest.raises(InvsagaError) as caught:  # the picking step alone takes 1.5 s
            client.wait(saga.saga_id, timeout=0.5)
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert client.wait(saga.saga_id, timeout=60).status == pb.SAGA_STATUS_COMPLETED
    asyncio.run(check_books(mesh))


# -- where and who: arguments, else the environment ------------------------------------------
async def test_the_token_comes_from_the_argument_a_file_or_the_environment(tmp_path, monkeypatch):
    token = secrets.token_urlsafe(24)
    env = {
        "INVSAGA_AUTH": "token",
        "INVSAGA_AUTH_TOKENS": f"{hash_token(token)}:client",
        "INVSAGA_SERVICE_TOKEN": secrets.token_urlsafe(24),
    }
    mesh = start_mesh(tmp_path / "mesh", services=("coordinator",), env=env)  # no stock: nothing moves
    address, missing = mesh.address("coordinator"), uuid.uuid4().hex
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    for name in ("INVSAGA_TOKEN", "INVSAGA_TOKEN_FILE", "INVSAGA_TLS_CA", "INVSAGA_TLS_CERT", "INVSAGA_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)

    def code_of(client: Client) -> grpc.StatusCode:
        with client, pytest.raises(InvsagaError) as caught:
            client.get(missing)
        return caught.value.code

    try:
        assert code_of(Client(address)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(Client(address, token=token)) == grpc.StatusCode.NOT_FOUND  # let in, and told
        assert code_of(Client(address, token_file=str(token_file))) == grpc.StatusCode.NOT_FOUND
        monkeypatch.setenv("INVSAGA_COORDINATOR_ADDR", address)
        monkeypatch.setenv("INVSAGA_TOKEN_FILE", str(token_file))
        assert code_of(Client()) == grpc.StatusCode.NOT_FOUND
        monkeypatch.setenv("INVSAGA_TOKEN", token)
        async with AsyncClient() as client:
            assert token not in repr(client) and address in repr(client)
            with pytest.raises(InvsagaError) as caught:
                [e async for e in client.watch(missing)]
            assert caught.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(InvsagaError) as caught:
            Client(address, token_file=str(tmp_path / "nowhere"))
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        mesh.stop()


# -- the resume rules, without a mesh -----------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Broken(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "broken"

    def trailing_metadata(self):
        return ()


def _event(seq: int) -> pb.SagaEvent:
    return pb.SagaEvent(seq=seq, type=pb.SAGA_EVENT_TYPE_STEP_STARTED)


def test_a_resumed_stream_drops_repeats_and_refuses_a_gap_it_sees_twice():
    from invsaga.client._common import GAP, WatchCursor

    cursor = WatchCursor("S", 0, False, [], RETRY, None)
    assert [cursor.accept(_event(s)) for s in (1, 2, 3)] == [True, True, True]
    assert cursor.request().after_seq == 3  # the next stream resumes after the last yielded
    assert [cursor.accept(_event(s)) for s in (2, 3, 4)] == [False, False, True]  # a replay's repeats
    with pytest.raises(GAP):
        cursor.accept(_event(6))
    assert cursor.broken(None) == 0.0  # reconnect at once, from seq 4
    with pytest.raises(InvsagaError) as caught:
        cursor.accept(_event(6))
    assert caught.value.code == grpc.StatusCode.DATA_LOSS
    filtered = WatchCursor("S", 0, False, [pb.SAGA_EVENT_TYPE_SAGA_COMPLETED], RETRY, None)
    assert filtered.accept(_event(15))  # filtered: the seqs between are not ours


def test_a_watch_reconnects_with_backoff_and_gives_up_after_a_long_outage():
    from invsaga.client._common import WatchCursor

    clock = FakeClock()
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=2.0, watch_reconnect_timeout=10.0)
    cursor = WatchCursor("S", 0, False, [], policy, None, clock=clock)
    waits = []
    with pytest.raises(InvsagaError) as caught:
        while True:
            cursor.request()
            waits.append(cursor.broken(Broken(grpc.StatusCode.UNAVAILABLE)))
            clock.now += waits[-1]
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert 10.0 <= clock.now <= 12.0 and max(waits) <= 2.0 and waits[0] <= 0.1
    with pytest.raises(InvsagaError) as caught:  # not transient: at once
        WatchCursor("S", 0, False, [], policy, None, clock=clock).broken(Broken(grpc.StatusCode.NOT_FOUND))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
