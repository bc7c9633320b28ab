"""The seed's scenarios end to end: six real processes."""

from __future__ import annotations

import asyncio

import grpc
import psycopg
import pytest

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.db import conninfo
from invsaga.runtime.errors import RpcFailure
from tests.saga_support import WH, MeshClient, order, step_statuses
from tests.support import start_mesh

FAST_RETRY = {"INVSAGA_RETRY_INITIAL_INTERVAL": "20ms", "INVSAGA_RETRY_MAX_INTERVAL": "100ms"}
STEP_FAULTS = ";".join(
    f"kind=error,code=FAILED_PRECONDITION,method=Execute,step={step},times=1"
    for step in ("ALLOCATE_INVENTORY", "LOCK_INVENTORY", "GENERATE_PICKLIST", "NOTIFY")
)


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    started = {}

    def get(name: str, env: dict[str, str] | None = None):
        if name not in started:
            started[name] = start_mesh(tmp_path_factory.mktemp(f"saga-{name}"), env={**FAST_RETRY, **(env or {})})
        return started[name]

    yield get
    for mesh in started.values():
        mesh.stop()


def stored(mesh, saga_id: str) -> tuple[int, int, int]:
    """The saga's status column, the status inside its stored state, and its claimed_from column."""
    with psycopg.connect(conninfo(mesh.database_url), options="-c search_path=coordinator") as db:
        status, state, claimed_from = db.execute(
            "SELECT status, state, claimed_from FROM sagas WHERE saga_id = %s", (saga_id,)
        ).fetchone()
    return status, pb.Saga.FromString(state).status, claimed_from


def announced(events, type_: int) -> int:
    return sum(1 for e in events if e.type == type_)


COMPENSATION_FAILS = {
    # A Compensate failing with a non-transient error, as often as it is tried (3 attempts):
    # an UNAVAILABLE one would be retried until the compensation's deadline instead.
    "INVSAGA_FAULTS": "kind=error,code=FAILED_PRECONDITION,method=Execute,step=GENERATE_PICKLIST;"
    "kind=error,code=INTERNAL,method=Compensate,step=ALLOCATE_INVENTORY,times=3"
}


async def _client(mesh, warehouses, stock) -> MeshClient:
    client = MeshClient(mesh)
    await client.seed(warehouses, stock)
    return client


async def test_single_split_and_insufficient(meshes):
    mesh = meshes("plain")
    c = await _client(
        mesh,
        [WH("WH-A", priority=9), WH("WH-B", priority=5), WH("WH-C", priority=1)],
        [("WH-A", "SKU-1", 10), ("WH-B", "SKU-1", 10), ("WH-C", "SKU-2", 3), ("WH-B", "SKU-3", 4)],
    )
    try:
        single = await c.run({"SKU-1": 4})
        assert single.status == pb.SAGA_STATUS_COMPLETED, single
        assert [(l.warehouse_id, l.quantity) for l in single.allocation.lines] == [("WH-A", 4)]
        assert len(single.picklists) == 1 and single.picklists[0].warehouse_id == "WH-A"
        assert set(step_statuses(single).values()) == {"SUCCEEDED"}
        assert sum(l.quantity for l in await c.held_locks(single.saga_id)) == 4

        split = await c.run({"SKU-1": 12, "SKU-2": 2})
        assert split.status == pb.SAGA_STATUS_COMPLETED, split
        by_wh = {}
        for line in split.allocation.lines:
            by_wh[(line.warehouse_id, line.sku)] = line.quantity
        assert by_wh == {("WH-A", "SKU-1"): 6, ("WH-B", "SKU-1"): 6, ("WH-C", "SKU-2"): 2}
        assert sorted(p.warehouse_id for p in split.picklists) == ["WH-A", "WH-B", "WH-C"]

        short = await c.run({"SKU-1": 100, "SKU-3": 2})
        assert short.status == pb.SAGA_STATUS_COMPENSATED
        assert short.failure.reason == "INSUFFICIENT_INVENTORY"
        assert short.failure.code == "FAILED_PRECONDITION"
        assert [(s.sku, s.required, s.available) for s in short.failure.shortages] == [("SKU-1", 100, 4)]
        assert step_statuses(short)["CheckAvailability"] == "FAILED"
        assert step_statuses(short)["AllocateInventory"] == "SKIPPED"
        assert await c.held_locks(short.saga_id) == []
        assert await c.allocations(short.saga_id) == []
        await c.check_books()
    finally:
        await c.close()


async def test_failure_at_each_step_compensates_exactly_the_steps_before_it(meshes):
    mesh = meshes("faults", {"INVSAGA_FAULTS": STEP_FAULTS})
    c = await _client(mesh, [WH("WH-A")], [("WH-A", "SKU-1", 100)])
    try:
        # The rules fire once each, in step order: saga k fails at step k + 2.
        expected = {
            "AllocateInventory": (
                {"AllocateInventory": "FAILED", "LockInventory": "SKIPPED"},
                pb.SAGA_STATUS_COMPENSATED,
            ),
            "LockInventory": (
                {"AllocateInventory": "COMPENSATED", "LockInventory": "FAILED", "GeneratePicklist": "SKIPPED"},
                pb.SAGA_STATUS_COMPENSATED,
            ),
            "GeneratePicklist": (
                {"AllocateInventory": "COMPENSATED", "LockInventory": "COMPENSATED", "GeneratePicklist": "FAILED"},
                pb.SAGA_STATUS_COMPENSATED,
            ),
            "Notify": (
                {
                    "AllocateInventory": "SUCCEEDED",
                    "LockInventory": "SUCCEEDED",
                    "GeneratePicklist": "SUCCEEDED",
                    "Notify": "FAILED",
                },
                pb.SAGA_STATUS_COMPLETED,
            ),
        }
        for step, (statuses, outcome) in expected.items():
            saga = await c.run({"SKU-1": 5})
            assert saga.status == outcome, (step, saga)
            got = step_statuses(saga)
            assert {k: got[k] for k in statuses} == statuses, (step, got)
            assert got["QueryWarehouses"] == got["CheckAvailability"] == "SUCCEEDED"
            if outcome == pb.SAGA_STATUS_COMPENSATED:
                assert saga.failure.step == step and saga.failure.code == "FAILED_PRECONDITION"
                assert await c.held_locks(saga.saga_id) == []
                assert all(
                    a.status == common_pb2.ALLOCATION_STATUS_CANCELLED for a in await c.allocations(saga.saga_id)
                )
            else:
                assert sum(l.quantity for l in await c.held_locks(saga.saga_id)) == 5
        await c.check_books()
    finally:
        await c.close()


async def test_lock_conflict_one_completes_one_compensates(meshes):
    # Allocation is slowed so both sagas are planned from the same stock before either locks.
    mesh = meshes(
        "slow-allocation", {"INVSAGA_FAULTS": "kind=latency,delay=0.4,method=Execute,step=ALLOCATE_INVENTORY"}
    )
    c = await _client(mesh, [WH("WH-A")], [("WH-A", "SKU-LAST", 6)])
    try:
        first, second = await asyncio.gather(c.run({"SKU-LAST": 5}), c.run({"SKU-LAST": 5}))
        outcomes = sorted([first, second], key=lambda s: s.status)
        won, lost = outcomes
        assert won.status == pb.SAGA_STATUS_COMPLETED
        assert lost.status == pb.SAGA_STATUS_COMPENSATED
        assert lost.failure.step == "LockInventory" and lost.failure.code == "ABORTED", lost.failure
        assert lost.failure.reason == "LOCK_CONFLICT"
        assert [a.status for a in await c.allocations(lost.saga_id)] == [common_pb2.ALLOCATION_STATUS_CANCELLED]
        assert await c.held_locks(lost.saga_id) == []
        assert lost.steps[3].attempts == 3  # lock conflicts are retried before giving up
        await c.check_books()
    finally:
        await c.close()


async def test_cancel_running_and_completed(meshes):
    mesh = meshes(
        "slow-allocation", {"INVSAGA_FAULTS": "kind=latency,delay=0.4,method=Execute,step=ALLOCATE_INVENTORY"}
    )
    c = await _client(mesh, [WH("WH-C")], [("WH-C", "SKU-C", 50)])
    try:
        saga_id = await c.start({"SKU-C": 3})
        async for reply in c.coordinator.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id)):
            if reply.event.step == "AllocateInventory" and reply.event.type == pb.SAGA_EVENT_TYPE_STEP_STARTED:
                break
        await c.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga_id, reason="customer changed their mind"))
        cancelled = await c.wait(saga_id)
        assert cancelled.status == pb.SAGA_STATUS_COMPENSATED
        assert cancelled.failure.reason == "CANCELLED"
        # The reason given is kept, in the saga and in its failure.
        assert cancelled.cancel_reason == "customer changed their mind"
        assert "customer changed their mind" in cancelled.failure.message
        assert step_statuses(cancelled)["AllocateInventory"] == "COMPENSATED"
        assert step_statuses(cancelled)["LockInventory"] == "SKIPPED"

        done = await c.run({"SKU-C": 4})
        assert done.status == pb.SAGA_STATUS_COMPLETED
        assert len(await c.held_locks(done.saga_id)) == 1
        # A COMPLETED saga's cancel releases its reservation (SPEC §9): the saga stays COMPLETED.
        await c.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=done.saga_id, reason="not needed"))
        released = await c.get(done.saga_id)
        assert released.status == pb.SAGA_STATUS_COMPLETED and released.cancel_reason == "not needed"
        assert released.reservation.state == common_pb2.RESERVATION_STATE_RELEASED
        assert await c.held_locks(done.saga_id) == []
        assert [a.status for a in await c.allocations(done.saga_id)] == [common_pb2.ALLOCATION_STATUS_CANCELLED]
        await c.check_books()

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.coordinator.ResumeSaga(pb.ResumeSagaRequest(saga_id=done.saga_id))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await c.close()


async def test_saga_timeout_compensates(meshes):
    mesh = meshes(
        "timeout",
        {
            "INVSAGA_SAGA_TIMEOUT": "1500ms",
            "INVSAGA_FAULTS": "kind=latency,delay=3,method=Execute,step=GENERATE_PICKLIST",
        },
    )
    c = await _client(mesh, [WH("WH-T")], [("WH-T", "SKU-T", 20)])
    try:
        saga = await c.run({"SKU-T": 2})
        assert saga.status == pb.SAGA_STATUS_COMPENSATED, saga
        assert saga.failure.reason == "SAGA_TIMEOUT" and saga.failure.step == "GeneratePicklist"
        statuses = step_statuses(saga)
        assert statuses["LockInventory"] == statuses["AllocateInventory"] == "COMPENSATED"
        # The picklist may have been written after the deadline: its Compensate fenced it off.
        assert statuses["GeneratePicklist"] == "FAILED"
        await asyncio.sleep(2.0)  # the slow picklist call finishes on the participant meanwhile
        assert await c.held_locks(saga.saga_id) == []
        await c.check_books()
    finally:
        await c.close()


async def test_compensation_failure_parks_then_resume_compensates(meshes):
    mesh = meshes("compensation-fails", COMPENSATION_FAILS)
    c = await _client(mesh, [WH("WH-F")], [("WH-F", "SKU-F", 20)])
    try:
        saga = await c.run({"SKU-F": 2})
        assert saga.status == pb.SAGA_STATUS_FAILED, saga
        assert saga.compensation_failure.step == "AllocateInventory"
        assert saga.compensation_failure.code == "INTERNAL"
        assert step_statuses(saga)["LockInventory"] == "COMPENSATED"
        assert step_statuses(saga)["AllocateInventory"] == "COMPENSATING"
        # The status is stored once: in its column, not inside the stored state.
        assert stored(mesh, saga.saga_id) == (pb.SAGA_STATUS_FAILED, pb.SAGA_STATUS_UNSPECIFIED, 0)

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        seen = len(await c.events(saga.saga_id))
        await c.coordinator.ResumeSaga(pb.ResumeSagaRequest(saga_id=saga.saga_id))
        resumed = await c.wait(saga.saga_id, after_seq=seen)
        assert resumed.status == pb.SAGA_STATUS_COMPENSATED
        assert resumed.failure.step == "GeneratePicklist"  # why it rolled back is kept
        assert step_statuses(resumed)["AllocateInventory"] == "COMPENSATED"
        tail = await c.events(saga.saga_id, after_seq=seen)
        assert tail[0].type == pb.SAGA_EVENT_TYPE_SAGA_RESUMED
        assert tail[-1].type == pb.SAGA_EVENT_TYPE_SAGA_COMPENSATED
        assert announced(await c.events(saga.saga_id), pb.SAGA_EVENT_TYPE_SAGA_RESUMED) == 1
        # The driver's first save took the resume's mark off.
        assert stored(mesh, saga.saga_id) == (pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_UNSPECIFIED, 0)
        await c.check_books()
    finally:
        await c.close()


async def test_a_resume_claimed_by_a_replica_that_died_is_announced_by_the_one_that_recovers_it(mesh_factory):
    # A mesh of its own, stopped when the test ends (the module's keep their connections).
    mesh = mesh_factory(
        env={**FAST_RETRY, **COMPENSATION_FAILS, "INVSAGA_LEASE": "1s", "INVSAGA_RECOVERY_INTERVAL": "300ms"}
    )
    c = await _client(mesh, [WH("WH-G")], [("WH-G", "SKU-G", 20)])
    try:
        saga = await c.run({"SKU-G": 2})
        assert saga.status == pb.SAGA_STATUS_FAILED, saga
        seen = len(await c.events(saga.saga_id))
        # As a ResumeSaga leaves the row on a replica that dies before its driver saves anything.
        with psycopg.connect(conninfo(mesh.database_url), options="-c search_path=coordinator") as db:
            db.execute(
                "UPDATE sagas SET status = %s, claimed_from = %s, owner = 'a-replica-gone', lease_until = 0"
                " WHERE saga_id = %s",
                (pb.SAGA_STATUS_COMPENSATING, pb.SAGA_STATUS_FAILED, saga.saga_id),
            )

        # (Polled: the row changed behind this replica's back, so its watchers are not told.)
        deadline = asyncio.get_running_loop().time() + 60
        while (resumed := await c.get(saga.saga_id)).status != pb.SAGA_STATUS_COMPENSATED:
            assert asyncio.get_running_loop().time() < deadline, resumed
            await asyncio.sleep(0.1)

        assert step_statuses(resumed)["AllocateInventory"] == "COMPENSATED"
        assert not resumed.HasField("compensation_failure")
        tail = await c.events(saga.saga_id, after_seq=seen)
        assert tail[0].type == pb.SAGA_EVENT_TYPE_SAGA_RESUMED
        assert announced(tail, pb.SAGA_EVENT_TYPE_SAGA_RESUMED) == 1
        assert stored(mesh, saga.saga_id) == (pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_UNSPECIFIED, 0)
        assert await c.held_locks(saga.saga_id) == []
        await c.check_books()
    finally:
        await c.close()


async def test_start_is_idempotent_on_request_id(meshes):
    mesh = meshes("plain")
    c = MeshClient(mesh)
    try:
        await c.seed([WH("WH-I")], [("WH-I", "SKU-I", 10)])
        request = order({"SKU-I": 1}, request_id="REQ-idem-1")
        first = await c.coordinator.StartSaga(pb.StartSagaRequest(request=request))
        again = await c.coordinator.StartSaga(pb.StartSagaRequest(request=request))
        assert again.saga_id == first.saga_id
        changed = order({"SKU-I": 2}, request_id="REQ-idem-1", order_id=request.order_id)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.coordinator.StartSaga(pb.StartSagaRequest(request=changed))
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert RpcFailure.from_error(err.value).reason == "REQUEST_ID_REUSED"
        await c.wait(first.saga_id)
        # Each repeated start began driving a saga of its own while its insert ran into the
        # taken request_id; none of those left a saga or an effect behind.
        listed = (await c.coordinator.ListSagas(pb.ListSagasRequest(page_size=1000))).sagas
        assert [s.saga_id for s in listed if s.request_id == "REQ-idem-1"] == [first.saga_id]
        assert {a.saga_id for a in await c.allocations()} <= {s.saga_id for s in listed}
        held = [lock for lock in await c.held_locks() if lock.sku == "SKU-I"]
        assert [(lock.saga_id, lock.quantity) for lock in held] == [(first.saga_id, 1)]
    finally:
        await c.close()


async def test_a_burst_of_repeated_starts_drives_one_saga_and_no_ghost_acts(meshes):
    mesh = meshes("plain")
    c = MeshClient(mesh)
    try:
        await c.seed([WH("WH-J")], [("WH-J", "SKU-J", 10)])
        request = order({"SKU-J": 1}, request_id="REQ-burst-1")
        replies = await asyncio.gather(
            *(c.coordinator.StartSaga(pb.StartSagaRequest(request=request)) for _ in range(20))
        )
        assert len({r.saga_id for r in replies}) == 1
        saga_id = replies[0].saga_id
        await c.wait(saga_id)
        # Every start but one drove a saga of its own while its insert ran into the taken
        # request_id: those stop before the first step that changes anything.
        assert {a.saga_id for a in await c.allocations() if any(line.sku == "SKU-J" for line in a.lines)} == {saga_id}
        held = [lock for lock in await c.held_locks() if lock.sku == "SKU-J"]
        assert [(lock.saga_id, lock.quantity) for lock in held] == [(saga_id, 1)]
    finally:
        await c.close()


async def test_watch_replays_from_after_seq_and_many_watchers_agree(meshes):
    mesh = meshes("plain")
    c = MeshClient(mesh)
    try:
        await c.seed([WH("WH-W")], [("WH-W", "SKU-W", 10)])
        saga_id = await c.start({"SKU-W": 1})
        watchers = await asyncio.gather(*(c.events(saga_id) for _ in range(20)))
        full = watchers[0]
        assert [e.seq for e in full] == list(range(1, len(full) + 1))
        assert full[0].type == pb.SAGA_EVENT_TYPE_SAGA_STARTED
        assert full[-1].type == pb.SAGA_EVENT_TYPE_SAGA_COMPLETED
        assert all([e.SerializeToString() for e in w] == [e.SerializeToString() for e in full] for w in watchers)
        # A watcher that reconnects with its last seq misses nothing and sees nothing twice.
        resumed = await c.events(saga_id, after_seq=4)
        assert [e.seq for e in resumed] == [e.seq for e in full[4:]]
        # Watching an unknown saga is NOT_FOUND.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.events("no-such-saga")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await c.close()


async def test_watch_with_event_types_streams_only_those_and_still_ends_with_the_saga(meshes):
    mesh = meshes("plain")
    c = MeshClient(mesh)
    try:
        await c.seed([WH("WH-F")], [("WH-F", "SKU-F", 10)])
        outcome = [
            pb.SAGA_EVENT_TYPE_SAGA_COMPLETED,
            pb.SAGA_EVENT_TYPE_SAGA_COMPENSATED,
            pb.SAGA_EVENT_TYPE_SAGA_FAILED,
        ]
        saga_id = await c.start({"SKU-F": 1})
        # Watching from the start, live: every event, the outcome only, and the step results
        # only (a filter without the terminal event: the stream ends with the saga all the same).
        full, ends, steps = await asyncio.wait_for(
            asyncio.gather(
                c.events(saga_id),
                c.events(saga_id, event_types=outcome),
                c.events(saga_id, event_types=[pb.SAGA_EVENT_TYPE_STEP_SUCCEEDED]),
            ),
            30,
        )
        assert full[-1].type == pb.SAGA_EVENT_TYPE_SAGA_COMPLETED
        assert [e.SerializeToString() for e in ends] == [full[-1].SerializeToString()]
        assert [e.seq for e in steps] == [e.seq for e in full if e.type == pb.SAGA_EVENT_TYPE_STEP_SUCCEEDED]
        assert len(steps) == 6
        # The same on a replay of the finished saga.
        assert [e.seq for e in await c.events(saga_id, event_types=outcome)] == [full[-1].seq]
        # A failed saga's outcome is its COMPENSATED event.
        short = await c.start({"SKU-F": 99})
        ends = await asyncio.wait_for(c.events(short, event_types=outcome), 30)
        assert [e.type for e in ends] == [pb.SAGA_EVENT_TYPE_SAGA_COMPENSATED]
        # An unknown event type is refused.
        for bad in ([pb.SAGA_EVENT_TYPE_UNSPECIFIED], [99]):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await c.events(saga_id, event_types=bad)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await c.close()
