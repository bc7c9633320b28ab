"""WatchSaga on a saga driven by this replica: its in-memory journal answers, not the database."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from coordinator import models
from coordinator.inventory_saga import INVENTORY_SAGA
from coordinator.commands import event, new_saga
from coordinator.hub import EventHub
from coordinator.server import CoordinatorServicer
from coordinator.store import SagaStore
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.db import open_service_engine
from tests.support import new_pg_database


@pytest.fixture
async def coordinator():
    """The coordinator's servicer over a real store on a fresh database; ``reads`` counts its status reads."""
    engine = await open_service_engine(
        SimpleNamespace(database_url=new_pg_database(), service="coordinator"), models.metadata, models.__file__
    )
    hub = EventHub()
    store = SagaStore(engine, on_commit=hub.publish)
    store.start()
    reads: list[str] = []
    status_of, events_after = store.status_of, store.events_after

    async def counted_status_of(saga_id):
        reads.append("status_of")
        return await status_of(saga_id)

    async def counted_events_after(saga_id, after_seq, limit=None):
        reads.append("events_after")
        return await events_after(saga_id, after_seq, limit=limit)

    store.status_of, store.events_after = counted_status_of, counted_events_after
    driving = SimpleNamespace(known=set(), owner="me", lease_ms=60_000)
    yield SimpleNamespace(
        servicer=CoordinatorServicer(driving, store, hub, None), store=store, known=driving.known, reads=reads
    )
    await store.stop()
    await engine.dispose()


async def test_a_watcher_resuming_ahead_of_a_running_saga_waits_without_reading_the_database(coordinator):
    c = coordinator
    saga = await _started(c.store, "S-1")
    c.known.add("S-1")  # driven here
    saga.status = pb.SAGA_STATUS_RUNNING
    steps = ["QueryWarehouses", "CheckAvailability", "AllocateInventory", "LockInventory"]
    for seq, step in enumerate(steps[:2], start=2):
        assert (await c.store.save(saga, [event(saga, seq, pb.SAGA_EVENT_TYPE_STEP_STARTED, step)], owner="me")).ok

    # A client reconnects having seen up to seq 4 while the saga has committed only three events.
    async def watch():
        return [r.event async for r in c.servicer.WatchSaga(pb.WatchSagaRequest(saga_id="S-1", after_seq=4), None)]

    watcher = asyncio.ensure_future(watch())
    for seq, step in enumerate(steps[2:], start=4):
        await asyncio.sleep(0.05)
        assert (await c.store.save(saga, [event(saga, seq, pb.SAGA_EVENT_TYPE_STEP_STARTED, step)], owner="me")).ok
    await asyncio.sleep(0.05)
    assert not watcher.done()
    c.known.discard("S-1")  # the driver finishes with the terminal event
    saga.status = pb.SAGA_STATUS_COMPLETED
    assert (await c.store.save(saga, [event(saga, 6, pb.SAGA_EVENT_TYPE_SAGA_COMPLETED)], owner="me")).ok
    events = await asyncio.wait_for(watcher, 1.0)  # well before the watcher's 2 s poll
    assert [(e.seq, e.type) for e in events] == [
        (5, pb.SAGA_EVENT_TYPE_STEP_STARTED),
        (6, pb.SAGA_EVENT_TYPE_SAGA_COMPLETED),
    ]
    # Each commit woke the watcher; this replica's journal told it the saga was still going.
    assert c.reads == []


async def test_a_watcher_past_the_end_of_a_finished_saga_gets_nothing_and_the_stream_ends(coordinator):
    c = coordinator
    saga = await _started(c.store, "S-2")
    saga.status = pb.SAGA_STATUS_COMPLETED
    assert (await c.store.save(saga, [event(saga, 2, pb.SAGA_EVENT_TYPE_SAGA_COMPLETED)], owner="me")).ok
    for after_seq in (2, 7):
        request = pb.WatchSagaRequest(saga_id="S-2", after_seq=after_seq)
        events = await asyncio.wait_for(_collect(c.servicer.WatchSaga(request, None)), 1.0)
        assert events == []
    # Once the journal shows the saga ended and no driver holds it here, no read is needed.
    assert c.reads == []


async def _started(store: SagaStore, saga_id: str) -> pb.Saga:
    """A saga created with its SAGA_STARTED event (seq 1), owned by "me"."""
    saga = new_saga(saga_id, pb.InventoryRequest(request_id=f"REQ-{saga_id}", order_id=f"O-{saga_id}"), INVENTORY_SAGA)
    _, found = store.create(
        saga,
        [event(saga, 1, pb.SAGA_EVENT_TYPE_SAGA_STARTED)],
        req_hash="h",
        deadline=2**62,
        owner="me",
        lease_ms=60_000,
    )
    assert await found is None
    return saga


async def _collect(stream):
    return [r.event async for r in stream]
