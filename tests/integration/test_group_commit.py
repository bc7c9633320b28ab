"""The coordinator's group committer: a batch's creates and saves, written together."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from coordinator import models
from coordinator.inventory_saga import INVENTORY_SAGA
from coordinator.commands import event, new_saga
from coordinator.store import SagaStore
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.db import open_service_engine
from tests.support import new_pg_database


@pytest.fixture
def published() -> list:
    """What the store hands to watchers once committed: (saga_id, events) pairs."""
    return []


@pytest.fixture
async def store(published):
    """A SagaStore on a fresh database, its writer running."""
    url = new_pg_database()
    engine = await open_service_engine(
        SimpleNamespace(database_url=url, service="coordinator"), models.metadata, models.__file__
    )
    store = SagaStore(engine, on_commit=published.extend)
    store.start()
    yield store
    await store.stop()
    await engine.dispose()


async def test_a_batch_of_creates_and_saves_commits_in_order_in_one_go(store, published, caplog):
    def start(saga_id: str):
        saga = new_saga(saga_id, pb.InventoryRequest(request_id="REQ-1", order_id="O-1"), INVENTORY_SAGA)
        _, found = store.create(
            saga,
            [event(saga, 1, pb.SAGA_EVENT_TYPE_SAGA_STARTED)],
            req_hash="h",
            deadline=2**62,
            owner="me",
            lease_ms=60_000,
        )
        saga.status = pb.SAGA_STATUS_RUNNING
        saved = store.save(saga, [event(saga, 2, pb.SAGA_EVENT_TYPE_STEP_STARTED, "QueryWarehouses")], owner="me")
        return found, saved

    # All four writes are queued before the writer runs, so they go in one batch: the save
    # of a saga created in the same batch must find its row; the second saga's request_id
    # is taken, so it is not created and its save changes nothing.
    with caplog.at_level(logging.WARNING, logger="invsaga"):
        (found, saved), (found_again, saved_again) = start("S-1"), start("S-2")
        assert await found is None
        assert (await saved).ok
        assert (await found_again).saga.saga_id == "S-1"
        assert not (await saved_again).ok
    assert not [r for r in caplog.records if "failed" in r.getMessage()]  # no fallback was needed
    row = await store.load("S-1")
    assert (row.status, row.last_seq) == (pb.SAGA_STATUS_RUNNING, 2)
    assert [e.seq for e in await store.events_after("S-1", 0)] == [1, 2]
    assert await store.load("S-2") is None
    assert [saga_id for saga_id, _ in published] == ["S-1", "S-1"]
    # One transaction wrote the row as saved and both events (one round trip, one commit).
    async with store.engine.connect() as conn:
        writers = (
            (
                await conn.execute(
                    text("SELECT xmin::text FROM sagas WHERE saga_id = 'S-1' UNION SELECT xmin::text FROM saga_events")
                )
            )
            .scalars()
            .all()
        )
    assert len(writers) == 1


async def test_a_sagas_writes_commit_in_the_order_they_were_queued(store):
    futures = []
    for k in range(40):  # all queued before the writer runs: they would fit one batch
        saga = new_saga(f"S-{k}", pb.InventoryRequest(request_id=f"REQ-{k}", order_id=f"O-{k}"), INVENTORY_SAGA)
        _, found = store.create(
            saga,
            [event(saga, 1, pb.SAGA_EVENT_TYPE_SAGA_STARTED)],
            req_hash="h",
            deadline=2**62,
            owner="me",
            lease_ms=60_000,
        )
        futures.append(found)
        # Two saves of one saga queued back to back (a driver waits for each; the writer
        # must not rely on it): one statement would keep either, and the later one must
        # be the one that stays.
        saga.status = pb.SAGA_STATUS_RUNNING
        futures.append(
            store.save(saga, [event(saga, 2, pb.SAGA_EVENT_TYPE_STEP_STARTED, "QueryWarehouses")], owner="me")
        )
        saga.status = pb.SAGA_STATUS_COMPLETED
        futures.append(store.save(saga, [event(saga, 3, pb.SAGA_EVENT_TYPE_SAGA_COMPLETED)], owner="me"))
    results = await asyncio.gather(*futures)
    assert all(r is None for r in results[0::3])
    assert all(r.ok for i, r in enumerate(results) if i % 3)
    for k in range(40):
        row = await store.load(f"S-{k}")
        assert (row.status, row.saga.status, row.last_seq) == (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPLETED, 3)
        assert [e.seq for e in await store.events_after(f"S-{k}", 0)] == [1, 2, 3]
