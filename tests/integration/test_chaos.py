"""Chaos: 1,500 sagas with faults on every participant while the coordinator is SIGKILLed.

Every participant's Execute and Compensate suffer added latency, UNAVAILABLE before the
effect, and "commit, then drop the response" at a few percent each; the coordinator is killed
and restarted four times, at random points spread over the run. Afterwards every saga is
terminal, every (saga, step, op) left exactly one effect in the participants' own records, and
the stock reconciles to the unit: on_hand at the start = on_hand now + consumed, locked = Σ held
locks, nothing negative.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict

import grpc
import pytest

from invsaga.allocation.v1 import allocation_pb2
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2
from invsaga.logistics.v1 import logistics_pb2, logistics_pb2_grpc
from invsaga.notify.v1 import notify_pb2, notify_pb2_grpc
from invsaga.soak import paged
from tests.saga_support import TERMINAL, WH, MeshClient, order
from tests.support import logs_tail, start_mesh

# Enough for four kills at random points to catch sagas at every step, and few enough to keep
# the whole suite within its budget.
SAGAS = 1500
CONCURRENCY = 32
FAULTS = ";".join(
    f"kind={kind},method={method},rate={rate}{extra}"
    for method in ("Execute", "Compensate")
    for kind, rate, extra in (("latency", 0.05, ",delay=0.05"), ("unavailable", 0.03, ""), ("drop_response", 0.03, ""))
)
CHAOS_ENV = {
    "INVSAGA_FAULTS": FAULTS,
    "INVSAGA_LEASE": "1s",
    "INVSAGA_RECOVERY_INTERVAL": "500ms",
    "INVSAGA_RETRY_INITIAL_INTERVAL": "20ms",
    "INVSAGA_RETRY_MAX_INTERVAL": "200ms",
}
WAREHOUSES = [WH("WH-X1", priority=9), WH("WH-X2", priority=6), WH("WH-X3", priority=3), WH("WH-X4", priority=1)]
SKUS = [f"SKU-X{i}" for i in range(6)]
ON_HAND = 300
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def _request(k: int, rng: random.Random) -> pb.InventoryRequest:
    skus = rng.sample(SKUS, rng.randint(1, 2))
    # One order in ten wants more than all warehouses hold: a business failure, compensated.
    items = {
        sku: (len(WAREHOUSES) * ON_HAND + 1 if k % 10 == 0 and i == 0 else rng.randint(1, 5))
        for i, sku in enumerate(skus)
    }
    strategy = rng.choice([common_pb2.ALLOCATION_STRATEGY_PRIORITY, common_pb2.ALLOCATION_STRATEGY_LOAD_BALANCE])
    return order(items, request_id=f"chaos-{k}", allocation_strategy=strategy)


class Chaos:
    def __init__(self, mesh, client: MeshClient, sagas: int) -> None:
        self.mesh = mesh
        self.sagas = sagas
        self.c = client
        self.kills = 0
        self.finished = 0
        self.start_retries = 0
        self.watch_retries = 0
        self.done = asyncio.Event()

    async def start(self, request: pb.InventoryRequest) -> str:
        """StartSaga, retried with the same request_id while the coordinator is down."""
        while True:
            try:
                reply = await self.c.coordinator.StartSaga(pb.StartSagaRequest(request=request), timeout=10)
                return reply.saga_id
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE:
                    raise
                self.start_retries += 1
                await asyncio.sleep(0.2)

    async def until_terminal(self, saga_id: str) -> int:
        """Follow the saga, re-attaching after a coordinator crash, until it is at rest."""
        last = 0
        while True:
            try:
                async for reply in self.c.coordinator.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id, after_seq=last)):
                    last = reply.event.seq
                saga = await self.c.get(saga_id)
                if saga.status in TERMINAL:
                    return saga.status
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE:
                    raise
                self.watch_retries += 1
            await asyncio.sleep(0.2)

    async def drive(self) -> list[str]:
        queue = list(range(self.sagas))
        saga_ids: dict[int, str] = {}

        async def worker(w: int) -> None:
            rng = random.Random(w)
            while queue:
                k = queue.pop()
                saga_ids[k] = await self.start(_request(k, rng))
                await self.until_terminal(saga_ids[k])
                self.finished += 1

        try:
            await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
        finally:
            self.done.set()
        return [saga_ids[k] for k in range(self.sagas)]

    async def killer(self) -> None:
        """Four kills, each at a random point of its own stretch of the run.

        The points are counted in sagas finished, not in seconds, so that the run has its
        kills however fast the machine gets through the sagas.
        """
        rng = random.Random(99)
        # The last stretch is where the sagas the test reads back for recovery run.
        for start in (0.05, 0.3, 0.55, 0.8):
            point = int(self.sagas * rng.uniform(start, start + 0.15))
            while self.finished < point:
                if self.done.is_set():
                    return
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            if self.done.is_set():
                return
            assert self.mesh.kill("coordinator") != 0
            self.kills += 1
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            self.mesh.start_one("coordinator")
            await asyncio.to_thread(self.mesh.wait_ready, "coordinator", 60)


async def _check_exactly_once(c: MeshClient, sagas: list[pb.Saga]) -> list:
    logistics = logistics_pb2_grpc.LogisticsServiceStub(c.channels["logistics"])
    notify = notify_pb2_grpc.NotifyServiceStub(c.channels["notify"])
    allocations = await paged(c.allocation.ListAllocations, allocation_pb2.ListAllocationsRequest, "allocations")
    locks = await paged(c.inventory.ListLocks, inventory_pb2.ListLocksRequest, "locks")
    picklists = await paged(logistics.ListPicklists, logistics_pb2.ListPicklistsRequest, "picklists")
    notifications = await paged(notify.ListNotifications, notify_pb2.ListNotificationsRequest, "notifications")

    by_saga: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for kind, rows in (
        ("allocations", allocations),
        ("locks", locks),
        ("picklists", picklists),
        ("notifications", notifications),
    ):
        for row in rows:
            by_saga[row.saga_id][kind].append(row)
    known = {s.saga_id for s in sagas}
    assert not set(by_saga) - known, "effects of sagas nobody started"

    for saga in sagas:
        mine = by_saga[saga.saga_id]
        allocs = mine["allocations"]
        assert len(allocs) <= 1, (saga.saga_id, allocs)
        plan = Counter((l.warehouse_id, l.sku, l.quantity) for l in allocs[0].lines) if allocs else Counter()
        # One lock row per allocation line, taken once, whatever the retries and re-drives.
        assert Counter((l.warehouse_id, l.sku, l.quantity) for l in mine["locks"]) in (plan, Counter()), saga.saga_id
        per_warehouse = Counter(p.warehouse_id for p in mine["picklists"])
        assert all(n == 1 for n in per_warehouse.values()), (saga.saga_id, per_warehouse)
        kinds = Counter(n.kind for n in mine["notifications"])
        assert kinds[common_pb2.NOTIFICATION_KIND_RESERVATION_CONFIRMED] <= 1, saga.saga_id
        assert kinds[common_pb2.NOTIFICATION_KIND_RESERVATION_FAILED] <= 1, saga.saga_id
        if saga.status == pb.SAGA_STATUS_COMPLETED:
            assert allocs and allocs[0].status == common_pb2.ALLOCATION_STATUS_ACTIVE, saga.saga_id
            assert plan == Counter((l.warehouse_id, l.sku, l.quantity) for l in saga.allocation.lines), saga.saga_id
            assert sorted(l.status for l in mine["locks"]) == [common_pb2.LOCK_STATUS_HELD] * sum(
                plan.values()
            ), saga.saga_id
            assert set(per_warehouse) == {w for w, _, _ in plan}, saga.saga_id
            assert kinds[common_pb2.NOTIFICATION_KIND_RESERVATION_FAILED] == 0, saga.saga_id
        elif saga.status == pb.SAGA_STATUS_COMPENSATED:
            assert all(a.status == common_pb2.ALLOCATION_STATUS_CANCELLED for a in allocs), saga.saga_id
            assert all(l.status == common_pb2.LOCK_STATUS_RELEASED for l in mine["locks"]), saga.saga_id
            assert all(p.status == common_pb2.PICKLIST_STATUS_CANCELLED for p in mine["picklists"]), saga.saga_id
            assert kinds[common_pb2.NOTIFICATION_KIND_RESERVATION_CONFIRMED] == 0, saga.saga_id
    return picklists


async def _consume_some(c: MeshClient, sagas: list[pb.Saga], picklists: list, n: int) -> None:
    """Pick and ship the picklists of ``n`` completed sagas: their locks become consumed stock."""
    logistics = logistics_pb2_grpc.LogisticsServiceStub(c.channels["logistics"])
    completed = {s.saga_id for s in sagas if s.status == pb.SAGA_STATUS_COMPLETED}
    chosen = sorted(completed)[:n]
    for p in picklists:
        if p.saga_id in chosen:
            for status in (common_pb2.PICKLIST_STATUS_PROCESSING, common_pb2.PICKLIST_STATUS_COMPLETED):
                await logistics.UpdatePicklistStatus(
                    logistics_pb2.UpdatePicklistStatusRequest(picklist_id=p.picklist_id, status=status), timeout=10
                )


async def _check_books(c: MeshClient, start: dict[tuple[str, str], int]) -> None:
    stock = await paged(c.inventory.ListStock, inventory_pb2.ListStockRequest, "stock")
    locks = await paged(c.inventory.ListLocks, inventory_pb2.ListLocksRequest, "locks")
    held, consumed = Counter(), Counter()
    for lock in locks:
        if lock.status == common_pb2.LOCK_STATUS_HELD:
            held[(lock.warehouse_id, lock.sku)] += lock.quantity
        elif lock.status == common_pb2.LOCK_STATUS_CONSUMED:
            consumed[(lock.warehouse_id, lock.sku)] += lock.quantity
    assert {(s.warehouse_id, s.sku) for s in stock} == set(start)
    assert sum(consumed.values()) > 0
    for s in stock:
        key = (s.warehouse_id, s.sku)
        assert s.on_hand >= 0 and s.locked >= 0 and s.available >= 0, s
        assert s.on_hand == s.available + s.locked, s
        assert start[key] == s.on_hand + consumed[key], (s, start[key], consumed[key])
        assert s.locked == held[key], (s, held[key])


@pytest.mark.timeout(420)
async def test_chaos_every_saga_ends_exactly_once_and_the_books_balance(tmp_path):
    began = time.monotonic()
    mesh = start_mesh(tmp_path, env=CHAOS_ENV)
    c = MeshClient(mesh)
    try:
        await c.seed(WAREHOUSES, [(w.warehouse_id, sku, ON_HAND) for w in WAREHOUSES for sku in SKUS])
        start = {(s.warehouse_id, s.sku): s.on_hand for s in await c.stock()}
        n = SAGAS
        chaos = Chaos(mesh, c, n)
        saga_ids, _ = await asyncio.gather(chaos.drive(), chaos.killer())
        driven = time.monotonic() - began

        assert len(set(saga_ids)) == n
        listed = await paged(c.coordinator.ListSagas, pb.ListSagasRequest, "sagas")
        assert len(listed) == n, "a retried StartSaga created a second saga"
        sagas = [await c.get(s) for s in saga_ids]
        outcomes = Counter(pb.SagaStatus.Name(s.status) for s in sagas)
        assert all(s.status in TERMINAL for s in sagas), outcomes
        assert outcomes["SAGA_STATUS_COMPLETED"] > n // 2 and outcomes["SAGA_STATUS_COMPENSATED"] >= n // 10, outcomes
        assert chaos.kills >= 3, f"only {chaos.kills} coordinator kills: the run was too short to test recovery"
        recovered = 0
        for saga in sagas[:400]:
            recovered += any(e.type == pb.SAGA_EVENT_TYPE_SAGA_RECOVERED for e in await c.events(saga.saga_id))
        assert recovered, "no saga was recovered after a kill"

        picklists = await _check_exactly_once(c, sagas)
        await _consume_some(c, sagas, picklists, 100)
        await _check_books(c, start)
        print(
            f"\nchaos: {n} sagas {dict(outcomes)}; {chaos.kills} coordinator kills; "
            f"{recovered} of the first 400 sagas recovered; StartSaga retries {chaos.start_retries}, "
            f"watch re-attachments {chaos.watch_retries}; driven in {driven:.0f} s, "
            f"{time.monotonic() - began:.0f} s in all"
        )
    except BaseException:
        print(logs_tail(mesh))
        raise
    finally:
        await c.close()
        mesh.stop()
