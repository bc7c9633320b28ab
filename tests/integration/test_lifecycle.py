"""The reservation after COMPLETED (SPEC §9), over real processes and PostgreSQL.

Every test ends with ``reconcile``: on_hand and locked per (warehouse, SKU) must be exactly what
the sagas' reservations say (locked: the lines of warehouses RESERVED or PICKING; consumed: the
lines of warehouses FULFILLED), besides the books' own balance.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.logistics.v1 import logistics_pb2, logistics_pb2_grpc
from invsaga.notify.v1 import notify_pb2, notify_pb2_grpc
from invsaga.runtime.errors import RpcFailure
from tests.saga_support import WH, MeshClient
from tests.support import logs_tail, metric_total, start_mesh

RS = common_pb2
RESERVED, PICKING, FULFILLED = (
    RS.RESERVATION_STATE_RESERVED,
    RS.RESERVATION_STATE_PICKING,
    RS.RESERVATION_STATE_FULFILLED,
)
RELEASED, EXPIRED = RS.RESERVATION_STATE_RELEASED, RS.RESERVATION_STATE_EXPIRED
PARTIAL = RS.RESERVATION_STATE_PARTIALLY_FULFILLED
PROCESSING, COMPLETED_LIST = common_pb2.PICKLIST_STATUS_PROCESSING, common_pb2.PICKLIST_STATUS_COMPLETED

STOCK = {("WH-L1", "SKU-A"): 1000, ("WH-L1", "SKU-B"): 1000, ("WH-L2", "SKU-A"): 1000, ("WH-L2", "SKU-C"): 1000}
WAREHOUSES = [WH("WH-L1", priority=1), WH("WH-L2", priority=2)]
ENV = {"INVSAGA_RESERVATION_SWEEP_INTERVAL": "0.2"}


class Client(MeshClient):
    def __init__(self, mesh) -> None:
        super().__init__(mesh)
        self.logistics = logistics_pb2_grpc.LogisticsServiceStub(self.channels["logistics"])
        self.notify = notify_pb2_grpc.NotifyServiceStub(self.channels["notify"])
        self.sagas: list[str] = []

    async def reserve(self, items: dict[str, int], **fields) -> pb.Saga:
        saga = await self.run(items, **fields)
        assert saga.status == pb.SAGA_STATUS_COMPLETED, saga.failure
        self.sagas.append(saga.saga_id)
        return saga

    async def picklists(self, saga_id: str) -> dict[str, common_pb2.Picklist]:
        reply = await self.logistics.ListPicklists(logistics_pb2.ListPicklistsRequest(saga_id=saga_id, page_size=100))
        return {p.warehouse_id: p for p in reply.picklists}

    async def move(self, saga: pb.Saga, warehouse_id: str, status: int) -> None:
        picklist = (await self.picklists(saga.saga_id))[warehouse_id]
        await self.logistics.UpdatePicklistStatus(
            logistics_pb2.UpdatePicklistStatusRequest(picklist_id=picklist.picklist_id, status=status), timeout=10
        )

    async def reservation_of(self, saga_id: str) -> pb.Reservation:
        return (await self.get(saga_id)).reservation

    async def until_state(self, saga_id: str, state: int, timeout: float = 10.0) -> pb.Reservation:
        """The reservation once it is ``state`` (GetSaga shows a change within a second)."""
        deadline = time.monotonic() + timeout
        while True:
            r = await self.reservation_of(saga_id)
            if r.state == state or time.monotonic() > deadline:
                return r
            await asyncio.sleep(0.05)

    async def notices(self, saga_id: str) -> Counter:
        reply = await self.notify.ListNotifications(notify_pb2.ListNotificationsRequest(page_size=1000))
        return Counter(n.kind for n in reply.notifications if n.attributes.get("saga_id") == saga_id)

    async def reconcile(self) -> None:
        """on_hand and locked per (warehouse, SKU) against the reservations, exactly."""
        locked, consumed = Counter(), Counter()
        for saga_id in self.sagas:
            saga = await self.get(saga_id)
            if saga.status != pb.SAGA_STATUS_COMPLETED:
                continue
            states = {w.warehouse_id: w.state for w in saga.reservation.warehouses}
            for line in saga.allocation.lines:
                state = states[line.warehouse_id]
                if state in (RESERVED, PICKING):
                    locked[(line.warehouse_id, line.sku)] += line.quantity
                elif state == FULFILLED:
                    consumed[(line.warehouse_id, line.sku)] += line.quantity
        for s in await self.stock():
            key = (s.warehouse_id, s.sku)
            assert (s.on_hand, s.locked) == (STOCK[key] - consumed[key], locked[key]), (key, s)
        await self.check_books()


@pytest.fixture
async def client(tmp_path):
    mesh = start_mesh(tmp_path, env=ENV)
    c = Client(mesh)
    try:
        await c.seed(WAREHOUSES, [(w, sku, n) for (w, sku), n in STOCK.items()])
        yield c
        await settle_feed(c)
        await c.reconcile()
    except BaseException:
        print(logs_tail(mesh))
        raise
    finally:
        await c.close()
        mesh.stop()


async def settle_feed(c: Client, timeout: float = 10.0) -> None:
    """Until every saga's reservation shows the picklist statuses logistics has."""
    deadline = time.monotonic() + timeout
    for saga_id in c.sagas:
        while True:
            shown = {w.warehouse_id: w.picklist_status for w in (await c.reservation_of(saga_id)).warehouses}
            actual = {wid: p.status for wid, p in (await c.picklists(saga_id)).items()}
            if shown == actual or time.monotonic() > deadline:
                assert shown == actual, saga_id
                break
            await asyncio.sleep(0.05)


async def follow(c: Client, saga_id: str) -> list[pb.SagaEvent]:
    request = pb.WatchSagaRequest(saga_id=saga_id, follow_reservation=True)
    return [r.event async for r in c.coordinator.WatchSaga(request)]


def reservation_events(events: list[pb.SagaEvent], warehouse_id: str = "") -> list[int]:
    return [
        e.reservation_state
        for e in events
        if e.type == pb.SAGA_EVENT_TYPE_RESERVATION_CHANGED and e.warehouse_id == warehouse_id
    ]


async def refused(call, code: grpc.StatusCode) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return RpcFailure.from_error(caught.value)


# -- transitions -----------------------------------------------------------------------------


async def test_a_reservation_goes_reserved_picking_fulfilled_in_getsaga_and_a_followed_watch(client):
    saga = await client.reserve({"SKU-B": 4})
    assert saga.reservation.state == RESERVED
    assert [(w.warehouse_id, w.state) for w in saga.reservation.warehouses] == [("WH-L1", RESERVED)]
    watcher = asyncio.create_task(follow(client, saga.saga_id))
    # A plain watch still ends at the saga's end, with the first reservation state in it.
    plain = await client.events(saga.saga_id)
    assert plain[-1].type == pb.SAGA_EVENT_TYPE_SAGA_COMPLETED and reservation_events(plain) == [RESERVED]

    await client.move(saga, "WH-L1", PROCESSING)
    assert (await client.until_state(saga.saga_id, PICKING)).warehouses[0].picklist_status == PROCESSING
    await client.reconcile()
    await client.move(saga, "WH-L1", COMPLETED_LIST)
    done = await client.until_state(saga.saga_id, FULFILLED)
    assert done.warehouses[0].state == FULFILLED
    events = await asyncio.wait_for(watcher, 10)
    assert reservation_events(events) == [RESERVED, PICKING, FULFILLED]
    assert reservation_events(events, "WH-L1") == [PICKING, FULFILLED]
    assert (await client.get(saga.saga_id)).status == pb.SAGA_STATUS_COMPLETED
    # Settled: the allocation is FULFILLED, and a fulfilled reservation sends no notice after its confirmation.
    await asyncio.sleep(0.5)
    assert [a.status for a in await client.allocations(saga.saga_id)] == [common_pb2.ALLOCATION_STATUS_FULFILLED]
    assert await client.notices(saga.saga_id) == Counter({common_pb2.NOTIFICATION_KIND_RESERVATION_CONFIRMED: 1})


async def test_a_split_order_whose_two_warehouses_end_differently(client):
    saga = await client.reserve({"SKU-B": 2, "SKU-C": 3})
    assert sorted(w.warehouse_id for w in saga.reservation.warehouses) == ["WH-L1", "WH-L2"]
    watcher = asyncio.create_task(follow(client, saga.saga_id))
    await client.move(saga, "WH-L1", PROCESSING)
    await client.until_state(saga.saga_id, PICKING)
    # Without release_unpicked the cancel is refused, naming the started picklist; nothing changes.
    picklists = await client.picklists(saga.saga_id)
    failure = await refused(
        client.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id, reason="customer asked")),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert failure.reason == "PICKING_STARTED" and picklists["WH-L1"].picklist_id in failure.metadata["picklists"]
    assert (await client.picklists(saga.saga_id))["WH-L2"].status == common_pb2.PICKLIST_STATUS_PENDING
    await client.reconcile()
    # With it, the untouched warehouse is released and the started one goes on.
    answer = await client.coordinator.CancelSaga(
        pb.CancelSagaRequest(saga_id=saga.saga_id, reason="customer asked", release_unpicked=True)
    )
    parts = {w.warehouse_id: w.state for w in answer.saga.reservation.warehouses}
    assert parts == {"WH-L1": PICKING, "WH-L2": RELEASED} and answer.saga.cancel_reason == "customer asked"
    await client.reconcile()
    await client.move(saga, "WH-L1", COMPLETED_LIST)
    ended = await client.until_state(saga.saga_id, PARTIAL)
    assert {w.warehouse_id: w.state for w in ended.warehouses} == {"WH-L1": FULFILLED, "WH-L2": RELEASED}
    events = await asyncio.wait_for(watcher, 10)
    assert reservation_events(events) == [RESERVED, PICKING, PARTIAL]
    assert reservation_events(events, "WH-L2") == [RELEASED]
    final = await client.get(saga.saga_id)
    assert final.status == pb.SAGA_STATUS_COMPLETED and final.cancel_reason == "customer asked"
    await asyncio.sleep(0.5)
    assert [a.status for a in await client.allocations(saga.saga_id)] == [common_pb2.ALLOCATION_STATUS_FULFILLED]


# -- cancel ----------------------------------------------------------------------------------


async def test_cancel_before_picking_releases_everything_and_the_customer_is_told_cancelled(client):
    saga = await client.reserve({"SKU-A": 5, "SKU-B": 1})
    answer = await client.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id, reason="wrong size"))
    assert answer.saga.reservation.state == RELEASED and answer.saga.status == pb.SAGA_STATUS_COMPLETED
    assert await client.held_locks(saga.saga_id) == []
    assert {p.status for p in (await client.picklists(saga.saga_id)).values()} == {common_pb2.PICKLIST_STATUS_CANCELLED}
    await client.reconcile()
    # Cancelling again answers the same; nothing more happens.
    again = await client.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id, reason="again"))
    assert again.saga.reservation.state == RELEASED
    deadline = time.monotonic() + 10
    while (await client.notices(saga.saga_id))[
        common_pb2.NOTIFICATION_KIND_RESERVATION_CANCELLED
    ] == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    kinds = await client.notices(saga.saga_id)
    assert kinds == Counter(
        {common_pb2.NOTIFICATION_KIND_RESERVATION_CONFIRMED: 1, common_pb2.NOTIFICATION_KIND_RESERVATION_CANCELLED: 1}
    )
    assert [a.status for a in await client.allocations(saga.saga_id)] == [common_pb2.ALLOCATION_STATUS_CANCELLED]
    events = await follow(client, saga.saga_id)
    assert reservation_events(events) == [RESERVED, RELEASED]


async def test_cancel_after_picking_started_is_refused_and_changes_nothing(client):
    saga = await client.reserve({"SKU-B": 4})
    await client.move(saga, "WH-L1", PROCESSING)
    await client.until_state(saga.saga_id, PICKING)
    before = await client.stock()
    failure = await refused(
        client.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id)), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert failure.reason == "PICKING_STARTED"
    assert await client.stock() == before and len(await client.held_locks(saga.saga_id)) == 1
    # The picker finishes: stock is consumed exactly once; a cancel now is refused as ended.
    await client.move(saga, "WH-L1", COMPLETED_LIST)
    await client.until_state(saga.saga_id, FULFILLED)
    failure = await refused(
        client.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id)), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert failure.reason == "RESERVATION_ENDED"


# -- expiry and extension ----------------------------------------------------------------------


def _in(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns() + int(seconds * 1e9))
    return ts


async def test_extend_pushes_the_expiry_and_is_refused_once_picking_started(client):
    saga = await client.reserve({"SKU-B": 1}, expired_at=_in(3))
    later = _in(600)
    extended = await client.coordinator.ExtendReservation(
        pb.ExtendReservationRequest(saga_id=saga.saga_id, until=later)
    )
    assert extended.reservation.expires_at == later and extended.reservation.state == RESERVED
    assert {lock.expires_at.seconds for lock in await client.held_locks(saga.saga_id)} == {later.seconds}
    await asyncio.sleep(3.5)  # past the first expiry: still held
    assert (await client.reservation_of(saga.saga_id)).state == RESERVED
    bad = await refused(
        client.coordinator.ExtendReservation(pb.ExtendReservationRequest(saga_id=saga.saga_id, until=_in(2 * 86400))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad.violations and bad.violations[0][0] == "until"
    await client.move(saga, "WH-L1", PROCESSING)
    await client.until_state(saga.saga_id, PICKING)
    failure = await refused(
        client.coordinator.ExtendReservation(pb.ExtendReservationRequest(saga_id=saga.saga_id, until=_in(900))),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert failure.reason == "PICKING_STARTED"


@pytest.mark.timeout(180)
async def test_200_short_reservations_half_picked_exactly_the_unpicked_half_expires_with_one_notice_each(client):
    ttl = 12.0
    until = _in(ttl)
    ids = await asyncio.gather(*(client.start({"SKU-A": 1}, expired_at=until) for _ in range(200)))
    sagas = [await client.wait(i, timeout=60) for i in ids]
    assert {s.status for s in sagas} == {pb.SAGA_STATUS_COMPLETED}
    client.sagas.extend(ids)
    picked, unpicked = sagas[:100], sagas[100:]
    for saga in picked:
        await client.move(saga, saga.reservation.warehouses[0].warehouse_id, PROCESSING)
    assert time.time() < until.seconds, "the picking took longer than the reservations' time to live"
    for saga in unpicked:
        assert (await client.until_state(saga.saga_id, EXPIRED, timeout=ttl + 20)).state == EXPIRED
    await settle_feed(client)
    states = Counter([(await client.reservation_of(s.saga_id)).state for s in sagas])
    assert states == Counter({PICKING: 100, EXPIRED: 100})
    deadline = time.monotonic() + 20
    while True:
        reply = await client.notify.ListNotifications(notify_pb2.ListNotificationsRequest(page_size=1000))
        expired = Counter(
            n.attributes.get("saga_id")
            for n in reply.notifications
            if n.kind == common_pb2.NOTIFICATION_KIND_RESERVATION_EXPIRED
        )
        if sum(expired.values()) >= 100 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert expired == Counter({s.saga_id: 1 for s in unpicked})
    assert not any(
        n.kind in (common_pb2.NOTIFICATION_KIND_ALLOCATION_EXPIRED, common_pb2.NOTIFICATION_KIND_LOCK_EXPIRED)
        for n in reply.notifications
    )
    assert metric_total(client.mesh, "allocation", "invsaga_expired_allocations_total") == 100
    # The picked half finishes and never expires.
    for saga in picked:
        await client.move(saga, saga.reservation.warehouses[0].warehouse_id, COMPLETED_LIST)
    for saga in picked:
        assert (await client.until_state(saga.saga_id, FULFILLED)).state == FULFILLED


async def test_list_sagas_by_reservation_state(client):
    kept = await client.reserve({"SKU-B": 1}, order_id=f"ORD-{uuid.uuid4().hex[:6]}")
    gone = await client.reserve({"SKU-B": 1})
    await client.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=gone.saga_id))
    listed = await client.coordinator.ListSagas(pb.ListSagasRequest(reservation_state=RELEASED))
    assert [s.saga_id for s in listed.sagas] == [gone.saga_id]
    listed = await client.coordinator.ListSagas(pb.ListSagasRequest(reservation_state=RESERVED))
    assert [s.saga_id for s in listed.sagas] == [kept.saga_id]
