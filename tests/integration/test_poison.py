"""Poison sagas: large sagas never break a read for anyone, failure texts stay bounded.

Reproductions from issue 21: sagas with large metadata made the default ListSagas fail with
RESOURCE_EXHAUSTED for everyone; a saga too large to send made GetSaga fail forever, and
CancelSaga on it cancelled and still answered with an error; 999 made-up 250-character SKUs
were copied into the saga and its events in full, again and again.
"""

from __future__ import annotations

import math

import psycopg
import pytest
from google.protobuf import struct_pb2

from coordinator.failures import FAILURE_TEXT_BYTES, MAX_SHORTAGES, bounded
from coordinator.views import PAGE_BYTES, SAGA_BYTES, fit
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.config import load_settings
from tests.saga_support import WH, MeshClient, order
from tests.support import start_mesh

# The largest metadata StartSaga accepts (the mesh runs with the default limit).
METADATA_BYTES = load_settings("coordinator", env={}).max_metadata_bytes
LONG_SKU = 250


def metadata(size: int) -> struct_pb2.Struct:
    """A Struct of (nearly) ``size`` serialized bytes, never more."""
    blob = struct_pb2.Struct()
    chunk = 4_000
    for i in range(size // (chunk + 32)):
        blob[f"note_{i:05d}"] = "m" * chunk
    rest = size - blob.ByteSize() - 32
    if rest > 0:
        blob["tail"] = "m" * rest
    assert blob.ByteSize() <= size
    return blob


def long_skus(count: int) -> dict[str, int]:
    return {f"X{i:03d}-".ljust(LONG_SKU, "x"): 1 for i in range(count)}


# -- the pure parts ---------------------------------------------------------------------


def test_fit_leaves_out_the_largest_parts_and_names_them():
    saga = pb.Saga(saga_id="s1", request_id="r1", status=pb.SAGA_STATUS_COMPLETED, request=order({"SKU-1": 2}))
    saga.request.metadata.CopyFrom(metadata(SAGA_BYTES + 100_000))
    saga.availability.stock.add(warehouse_id="WH-A", sku="SKU-1", available=5)
    fitted = fit(saga)
    assert fitted.ByteSize() <= SAGA_BYTES
    assert list(fitted.omitted_fields) == ["availability", "request.metadata"]
    assert [i.sku for i in fitted.request.items] == ["SKU-1"] and fitted.status == pb.SAGA_STATUS_COMPLETED
    small = pb.Saga(saga_id="s2", request=order({"SKU-1": 1}))
    assert fit(small) is small and not small.omitted_fields


def test_a_failure_keeps_a_bounded_text_and_the_count_of_its_shortages():
    shortages = [common_pb2.Shortage(sku=sku, required=1, available=0) for sku in long_skus(999)]
    failure = pb.SagaFailure(
        step="CheckAvailability",
        code="FAILED_PRECONDITION",
        reason="INSUFFICIENT_INVENTORY",
        message="insufficient inventory across warehouses: " + ", ".join(f"{s.sku} needs 1, has 0" for s in shortages),
        shortages=shortages,
    )
    bounded(failure)
    assert len(failure.shortages) == MAX_SHORTAGES and failure.shortages[0].sku == shortages[0].sku
    assert len(failure.message.encode()) <= FAILURE_TEXT_BYTES
    assert failure.message.startswith("insufficient inventory across warehouses: X000-")
    assert "truncated" in failure.message and "999 shortages in all" in failure.message
    assert bounded(pb.SagaFailure(message="é" * 2000)).message.encode().__len__() <= FAILURE_TEXT_BYTES


# -- over a real mesh -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    started = start_mesh(tmp_path_factory.mktemp("poison"))
    yield started
    started.stop()


@pytest.fixture
async def client(mesh):
    c = MeshClient(mesh)  # a default client: it accepts replies of at most 4 MiB
    await c.seed([WH("WH-A")], [("WH-A", "SKU-1", 1_000)])
    yield c
    await c.check_books()
    await c.close()


async def _all_pages(c: MeshClient) -> list[pb.ListSagasResponse]:
    pages, token = [], ""
    while True:
        page = await c.coordinator.ListSagas(pb.ListSagasRequest(page_token=token), timeout=30)
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


async def test_list_sagas_pages_by_bytes_after_sagas_with_large_metadata(client):
    count = math.ceil(1.25 * PAGE_BYTES / METADATA_BYTES)
    ids = [
        await client.start({"SKU-1": 1}, metadata=metadata(METADATA_BYTES), order_id=f"BIG-{i}") for i in range(count)
    ]
    for saga_id in ids:
        await client.wait(saga_id)
    pages = await _all_pages(client)  # the default page size, as any client asks
    assert all(page.ByteSize() <= PAGE_BYTES + 1024 for page in pages)
    assert len([s for s in pages[0].sagas if s.saga_id in ids]) < count  # the first page ended early
    seen = [s.saga_id for page in pages for s in page.sagas]
    assert len(seen) == len(set(seen)) and set(ids) <= set(seen)  # and the next ones went on from there
    assert all(len(s.request.metadata.fields) for page in pages for s in page.sagas if s.saga_id in ids)


async def test_a_saga_too_large_to_send_is_still_served_and_cancelled(client, mesh):
    saga_id = await client.start({"SKU-1": 3}, metadata=metadata(1_000))
    done = await client.wait(saga_id)
    assert done.status == pb.SAGA_STATUS_COMPLETED, done.failure
    # As a saga stored before the limits (or grown by its steps) can be: twice what a reply carries.
    done.request.metadata.CopyFrom(metadata(2 * SAGA_BYTES))
    url = mesh.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE coordinator.sagas SET state = %s WHERE saga_id = %s", (done.SerializeToString(), saga_id))

    got = await client.get(saga_id)
    assert got.ByteSize() <= SAGA_BYTES and "request.metadata" in got.omitted_fields
    assert [i.sku for i in got.request.items] == ["SKU-1"] and len(got.allocation.lines) == 1
    pages = await _all_pages(client)
    assert saga_id in {s.saga_id for page in pages for s in page.sagas}
    assert all(page.ByteSize() <= SAGA_BYTES + 1024 for page in pages)

    # Cancelling the COMPLETED saga releases its reservation (docs/lifecycle.md); the answer is small.
    reply = await client.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga_id, reason="too big"), timeout=30)
    assert reply.ByteSize() < 512
    assert (reply.saga.saga_id, reply.saga.status) == (saga_id, pb.SAGA_STATUS_COMPLETED)
    assert reply.saga.reservation.state == common_pb2.RESERVATION_STATE_RELEASED
    assert list(reply.saga.omitted_fields) == ["*"]
    released = await client.get(saga_id)
    assert released.reservation.state == common_pb2.RESERVATION_STATE_RELEASED and released.cancel_reason == "too big"
    assert await client.held_locks(saga_id) == []


async def test_cancel_answers_small_and_takes_effect(client):
    saga = await client.run({"SKU-1": 2}, metadata=metadata(METADATA_BYTES))
    assert saga.status == pb.SAGA_STATUS_COMPLETED, saga.failure
    assert sum(lock.quantity for lock in await client.held_locks(saga.saga_id)) == 2
    reply = await client.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id), timeout=30)
    assert reply.ByteSize() < 512 and reply.saga.request_id == saga.request_id
    assert reply.saga.status == pb.SAGA_STATUS_COMPLETED
    assert reply.saga.reservation.state == common_pb2.RESERVATION_STATE_RELEASED
    released = await client.get(saga.saga_id)
    assert released.reservation.state == common_pb2.RESERVATION_STATE_RELEASED
    assert await client.held_locks(saga.saga_id) == []


async def test_an_order_of_999_long_made_up_skus_stores_bounded_failure_text(client):
    saga = await client.run({"SKU-1": 1, **long_skus(999)})
    assert saga.status == pb.SAGA_STATUS_COMPENSATED
    failure = saga.failure
    assert failure.reason == "INSUFFICIENT_INVENTORY" and failure.step == "CheckAvailability"
    assert len(failure.shortages) == MAX_SHORTAGES and len(saga.availability.shortages) <= MAX_SHORTAGES
    assert len(failure.message.encode()) <= FAILURE_TEXT_BYTES and "999 shortages in all" in failure.message
    assert all(len(step.error.encode()) <= FAILURE_TEXT_BYTES + 64 for step in saga.steps)
    # What the saga keeps beside the order itself, and every event, stays small.
    assert saga.ByteSize() - saga.request.ByteSize() < 32 * 1024
    events = await client.events(saga.saga_id)
    assert events and all(ev.ByteSize() <= FAILURE_TEXT_BYTES + 512 for ev in events)
    assert sum(ev.ByteSize() for ev in events) < 16 * 1024
