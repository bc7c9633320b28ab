"""The participants' side of the reservation lifecycle (SPEC §9, docs/lifecycle.md), over real
processes and PostgreSQL: the picklist change feed, CancelPicklists, ExtendLocks,
SettleAllocation and ExtendAllocation.

Real sagas build the participants' state; the coordinator is then stopped, so that nothing but
these tests reads or acknowledges the feed, releases or settles anything. Every test ends with
the books reconciled: on_hand and locked per (warehouse, SKU) exactly what the picklists say
(``expect_stock``), and locked equal to the held locks (``MeshClient.check_books``).
"""

from __future__ import annotations

import signal
from collections import Counter
from datetime import timedelta

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from invsaga.allocation.v1 import allocation_pb2
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2
from invsaga.inventory.v1 import inventory_pb2
from invsaga.logistics.v1 import logistics_pb2 as lpb
from invsaga.logistics.v1 import logistics_pb2_grpc
from invsaga.runtime.config import METRICS_PORT_OFFSET
from invsaga.runtime.convert import to_timestamp, utcnow
from invsaga.runtime.errors import RpcFailure
from tests.saga_support import WH, MeshClient
from tests.support import logs_tail, start_mesh

PENDING, PROCESSING = common_pb2.PICKLIST_STATUS_PENDING, common_pb2.PICKLIST_STATUS_PROCESSING
COMPLETED, CANCELLED = common_pb2.PICKLIST_STATUS_COMPLETED, common_pb2.PICKLIST_STATUS_CANCELLED
FULFILLED, EXPIRED = common_pb2.ALLOCATION_STATUS_FULFILLED, common_pb2.ALLOCATION_STATUS_EXPIRED

# Each SKU in one warehouse only, so an order of both splits into one picklist per warehouse.
STOCK = {("WH-P1", "SKU-A"): 100, ("WH-P2", "SKU-C"): 100}
ORDER = {"SKU-A": 2, "SKU-C": 3}
WAREHOUSE_OF = {"SKU-A": "WH-P1", "SKU-C": "WH-P2"}
SAGAS = ("feed", "refuse", "all_pending", "extend", "settle_fulfilled", "settle_expired")


class Client(MeshClient):
    def __init__(self, mesh) -> None:
        super().__init__(mesh)
        self.logistics = logistics_pb2_grpc.LogisticsServiceStub(self.channels["logistics"])
        self.sagas: dict[str, coordinator_pb2.Saga] = {}

    async def picklists(self, saga_id: str) -> dict[str, common_pb2.Picklist]:
        reply = await self.logistics.ListPicklists(lpb.ListPicklistsRequest(saga_id=saga_id, page_size=100))
        return {p.warehouse_id: p for p in reply.picklists}

    async def move(self, picklist: common_pb2.Picklist, status: int) -> None:
        await self.logistics.UpdatePicklistStatus(
            lpb.UpdatePicklistStatusRequest(picklist_id=picklist.picklist_id, status=status), timeout=10
        )

    async def changes(self, saga_id: str) -> list[lpb.PicklistChange]:
        reply = await self.logistics.ListPicklistChanges(lpb.ListPicklistChangesRequest(limit=1000))
        return [c for c in reply.changes if c.saga_id == saga_id]

    async def expect_stock(self) -> None:
        """on_hand and locked per (warehouse, SKU) exactly as the picklists say: a COMPLETED
        picklist consumed its saga's units there, a PENDING or PROCESSING one keeps them locked,
        a CANCELLED one gave them back; then the books' own balance."""
        locked, consumed = Counter(), Counter()
        for saga in self.sagas.values():
            for warehouse_id, picklist in (await self.picklists(saga.saga_id)).items():
                for sku, quantity in ORDER.items():
                    if WAREHOUSE_OF[sku] != warehouse_id:
                        continue
                    if picklist.status == COMPLETED:
                        consumed[(warehouse_id, sku)] += quantity
                    elif picklist.status in (PENDING, PROCESSING):
                        locked[(warehouse_id, sku)] += quantity
        for s in await self.stock():
            key = (s.warehouse_id, s.sku)
            assert (s.on_hand, s.locked) == (STOCK[key] - consumed[key], locked[key]), (key, s)
        await self.check_books()

    async def cancel(self, saga_id: str, all_or_nothing: bool) -> lpb.CancelPicklistsResponse:
        return await self.logistics.CancelPicklists(
            lpb.CancelPicklistsRequest(saga_id=saga_id, all_or_nothing=all_or_nothing, reason="test"), timeout=10
        )


@pytest.fixture(scope="module")
async def client(tmp_path_factory):
    mesh = start_mesh(tmp_path_factory.mktemp("participants"))
    c = Client(mesh)
    try:
        await c.seed([WH("WH-P1"), WH("WH-P2")], [(w, sku, n) for (w, sku), n in STOCK.items()])
        for name in SAGAS:
            saga = await c.run(ORDER)
            assert saga.status == coordinator_pb2.SAGA_STATUS_COMPLETED, saga.failure
            assert set(await c.picklists(saga.saga_id)) == {"WH-P1", "WH-P2"}
            c.sagas[name] = saga
        # From here on only the tests act on the reservations (the coordinator would follow the
        # feed, acknowledge it and settle the allocations itself).
        mesh.kill("coordinator", signal.SIGTERM)
        await c.expect_stock()
        yield c
        await c.expect_stock()
    except BaseException:
        print(logs_tail(mesh))
        raise
    finally:
        await c.close()
        mesh.stop()


async def failure(call) -> RpcFailure:
    with pytest.raises(grpc.RpcError) as caught:
        await call
    return RpcFailure.from_error(caught.value)


async def test_each_status_change_is_in_the_feed_in_order_until_acknowledged_across_a_restart(client):
    c = client
    saga_id = c.sagas["feed"].saga_id
    assert await c.changes(saga_id) == []  # creating picklists is no change
    lists = await c.picklists(saga_id)
    first, second = lists["WH-P1"], lists["WH-P2"]
    await c.move(first, PROCESSING)
    await c.move(first, PROCESSING)  # a repeat changes nothing and records nothing
    await c.move(first, COMPLETED)
    await c.move(second, CANCELLED)
    expected = [(first.picklist_id, PROCESSING), (first.picklist_id, COMPLETED), (second.picklist_id, CANCELLED)]

    found = await c.changes(saga_id)
    assert [(x.picklist_id, x.status) for x in found] == expected
    assert [x.change_id for x in found] == sorted(x.change_id for x in found)
    assert [x.warehouse_id for x in found] == ["WH-P1", "WH-P1", "WH-P2"]
    assert all(x.changed_at.seconds > 0 for x in found)
    await c.expect_stock()

    # Unacknowledged changes survive a restart of logistics.
    c.mesh.kill("logistics", signal.SIGTERM)
    c.mesh.start_one("logistics")
    c.mesh.wait_ready("logistics")
    assert await c.changes(saga_id) == found

    one = await c.logistics.ListPicklistChanges(lpb.ListPicklistChangesRequest(limit=1))
    assert len(one.changes) == 1 and one.changes[0].change_id <= found[0].change_id

    ids = [x.change_id for x in found]
    acked = await c.logistics.AckPicklistChanges(lpb.AckPicklistChangesRequest(change_ids=ids))
    assert acked.acknowledged == 3
    again = await c.logistics.AckPicklistChanges(lpb.AckPicklistChangesRequest(change_ids=ids + [2**62]))
    assert again.acknowledged == 0  # a repeated (or unknown) acknowledgement is harmless
    assert await c.changes(saga_id) == []

    too_many = await failure(c.logistics.ListPicklistChanges(lpb.ListPicklistChangesRequest(limit=1001)))
    assert too_many.code == grpc.StatusCode.INVALID_ARGUMENT
    negative = await failure(c.logistics.ListPicklistChanges(lpb.ListPicklistChangesRequest(limit=-1)))
    assert negative.code == grpc.StatusCode.INVALID_ARGUMENT
    bulk = await failure(c.logistics.AckPicklistChanges(lpb.AckPicklistChangesRequest(change_ids=range(1, 1002))))
    assert bulk.code == grpc.StatusCode.INVALID_ARGUMENT
    await c.expect_stock()


async def test_cancel_picklists_refuses_all_or_nothing_once_picking_started_then_releases_the_rest(client):
    c = client
    saga_id = c.sagas["refuse"].saga_id
    lists = await c.picklists(saga_id)
    started, waiting = lists["WH-P1"], lists["WH-P2"]
    await c.move(started, PROCESSING)
    stock_before, locks_before = await c.stock(), await c.held_locks(saga_id)
    changes_before = await c.changes(saga_id)

    refused = await failure(c.cancel(saga_id, all_or_nothing=True))
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION and refused.reason == "PICKING_STARTED"
    assert refused.metadata["picklists"] == started.picklist_id
    # Nothing changed: picklists, locks, stock, feed.
    assert {w: p.status for w, p in (await c.picklists(saga_id)).items()} == {"WH-P1": PROCESSING, "WH-P2": PENDING}
    assert await c.held_locks(saga_id) == locks_before
    assert await c.stock() == stock_before
    assert await c.changes(saga_id) == changes_before
    await c.expect_stock()

    released = await c.cancel(saga_id, all_or_nothing=False)
    assert [(p.picklist_id, p.status) for p in released.cancelled] == [(waiting.picklist_id, CANCELLED)]
    assert [(p.picklist_id, p.status) for p in released.untouched] == [(started.picklist_id, PROCESSING)]
    # Exactly the cancelled picklist's locks went back: WH-P2's, not the picking WH-P1's.
    assert {(lock.warehouse_id, lock.sku, lock.quantity) for lock in await c.held_locks(saga_id)} == {
        ("WH-P1", "SKU-A", 2)
    }
    assert [(x.picklist_id, x.status) for x in await c.changes(saga_id)] == [
        (started.picklist_id, PROCESSING),
        (waiting.picklist_id, CANCELLED),
    ]
    await c.expect_stock()

    repeat = await c.cancel(saga_id, all_or_nothing=False)  # idempotent: nothing left to cancel
    assert list(repeat.cancelled) == []
    assert {p.picklist_id: p.status for p in repeat.untouched} == {
        started.picklist_id: PROCESSING,
        waiting.picklist_id: CANCELLED,
    }
    assert len(await c.changes(saga_id)) == 2
    await c.expect_stock()


async def test_cancel_picklists_with_nothing_started_releases_everything_once(client):
    c = client
    saga_id = c.sagas["all_pending"].saga_id
    lists = await c.picklists(saga_id)
    released = await c.cancel(saga_id, all_or_nothing=True)
    assert sorted(p.picklist_id for p in released.cancelled) == sorted(p.picklist_id for p in lists.values())
    assert list(released.untouched) == []
    assert await c.held_locks(saga_id) == []
    await c.expect_stock()

    for all_or_nothing in (True, False):  # a cancelled picklist does not count as started
        repeat = await c.cancel(saga_id, all_or_nothing=all_or_nothing)
        assert list(repeat.cancelled) == [] and {p.status for p in repeat.untouched} == {CANCELLED}
    assert sorted(x.status for x in await c.changes(saga_id)) == [CANCELLED, CANCELLED]

    unknown = await c.cancel("saga-unknown", all_or_nothing=True)
    assert list(unknown.cancelled) == [] and list(unknown.untouched) == []
    missing = await failure(c.cancel("", all_or_nothing=False))
    assert missing.code == grpc.StatusCode.INVALID_ARGUMENT
    await c.expect_stock()


async def test_extend_locks_moves_the_expiry_of_the_unpicked_held_locks(client):
    c = client
    saga_id = c.sagas["extend"].saga_id
    until = to_timestamp(utcnow() + timedelta(hours=2))
    extend = c.inventory.ExtendLocks
    reply = await extend(inventory_pb2.ExtendLocksRequest(saga_id=saga_id, until=until))
    assert reply.extended == 2
    assert {lock.expires_at.ToDatetime() for lock in await c.held_locks(saga_id)} == {until.ToDatetime()}

    # Picking started at WH-P1: only WH-P2's lock moves again.
    await c.move((await c.picklists(saga_id))["WH-P1"], PROCESSING)
    later = to_timestamp(utcnow() + timedelta(hours=3))
    assert (await extend(inventory_pb2.ExtendLocksRequest(saga_id=saga_id, until=later))).extended == 1
    assert {lock.warehouse_id: lock.expires_at for lock in await c.held_locks(saga_id)} == {
        "WH-P1": until,
        "WH-P2": later,
    }

    past = to_timestamp(utcnow() - timedelta(seconds=1))
    for request in (
        inventory_pb2.ExtendLocksRequest(saga_id=saga_id, until=past),
        inventory_pb2.ExtendLocksRequest(saga_id=saga_id),
        inventory_pb2.ExtendLocksRequest(until=later),
    ):
        assert (await failure(extend(request))).code == grpc.StatusCode.INVALID_ARGUMENT
    assert (await extend(inventory_pb2.ExtendLocksRequest(saga_id="saga-unknown", until=later))).extended == 0
    assert {lock.warehouse_id: lock.expires_at for lock in await c.held_locks(saga_id)} == {
        "WH-P1": until,
        "WH-P2": later,
    }
    await c.expect_stock()


def expired_allocations(mesh) -> float:
    port = int(mesh.address("allocation").rsplit(":", 1)[1])
    body = httpx.get(f"http://127.0.0.1:{port + METRICS_PORT_OFFSET}/metrics", timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "invsaga_expired_allocations_total"
    )


async def test_settle_and_extend_allocation(client):
    c = client
    settle, extend = c.allocation.SettleAllocation, c.allocation.ExtendAllocation
    [picked] = await c.allocations(c.sagas["settle_fulfilled"].saga_id)
    [lapsed] = await c.allocations(c.sagas["settle_expired"].saga_id)
    assert picked.status == lapsed.status == common_pb2.ALLOCATION_STATUS_ACTIVE

    until = to_timestamp(utcnow() + timedelta(hours=2))
    extended = await extend(allocation_pb2.ExtendAllocationRequest(allocation_id=lapsed.allocation_id, until=until))
    assert extended.allocation.expires_at == until
    assert (await c.allocations(c.sagas["settle_expired"].saga_id))[0].expires_at == until

    for _ in range(2):  # settling again to the same status: no change, success
        done = await settle(
            allocation_pb2.SettleAllocationRequest(allocation_id=picked.allocation_id, status=FULFILLED)
        )
        assert done.allocation.status == FULFILLED
    before = expired_allocations(c.mesh)
    for _ in range(2):
        done = await settle(
            allocation_pb2.SettleAllocationRequest(allocation_id=lapsed.allocation_id, status=EXPIRED, reason="lapsed")
        )
        assert done.allocation.status == EXPIRED
    assert expired_allocations(c.mesh) == before + 1  # counted once per allocation

    other = await failure(
        settle(allocation_pb2.SettleAllocationRequest(allocation_id=picked.allocation_id, status=EXPIRED))
    )
    assert other.code == grpc.StatusCode.FAILED_PRECONDITION and other.reason == "ALLOCATION_SETTLED"
    assert expired_allocations(c.mesh) == before + 1
    settled = await failure(
        extend(allocation_pb2.ExtendAllocationRequest(allocation_id=lapsed.allocation_id, until=until))
    )
    assert settled.code == grpc.StatusCode.FAILED_PRECONDITION and settled.reason == "ALLOCATION_SETTLED"
    active = common_pb2.ALLOCATION_STATUS_ACTIVE
    bad = await failure(
        settle(allocation_pb2.SettleAllocationRequest(allocation_id=picked.allocation_id, status=active))
    )
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    missing = await failure(settle(allocation_pb2.SettleAllocationRequest(allocation_id="AL-none", status=EXPIRED)))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    past = to_timestamp(utcnow() - timedelta(seconds=1))
    late = await failure(extend(allocation_pb2.ExtendAllocationRequest(allocation_id=picked.allocation_id, until=past)))
    assert late.code == grpc.StatusCode.INVALID_ARGUMENT
    # Settling an allocation moves no stock: the books are as the picklists say.
    await c.expect_stock()
