"""ListSagas finds an order's sagas: by order_id, customer_id, creation time, reservation state."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.errors import RpcFailure
from tests.integration.test_tenants import TokenClient, token_mesh  # noqa: F401 (a fixture)
from tests.saga_support import WH, MeshClient
from tests.support import start_mesh


@pytest.fixture(scope="module")
async def client(tmp_path_factory):
    mesh = start_mesh(tmp_path_factory.mktemp("list-filters"))
    c = MeshClient(mesh)
    try:
        await c.seed([WH("WH-F")], [("WH-F", "SKU-F", 1000)])
        yield c
        await c.check_books()
    finally:
        await c.close()
        mesh.stop()


async def listed(c: MeshClient, **filters) -> list[str]:
    """Every saga id the filters select, page by page (pages of 2), newest first."""
    ids, token = [], ""
    while True:
        reply = await c.coordinator.ListSagas(pb.ListSagasRequest(page_size=2, page_token=token, **filters))
        ids.extend(s.saga_id for s in reply.sagas)
        token = reply.next_page_token
        if not token:
            return ids


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


async def test_each_filter_alone_and_together_with_paging(client):
    order, customer = f"ORD-{uuid.uuid4().hex[:8]}", f"CUST-{uuid.uuid4().hex[:8]}"
    first = [await client.run({"SKU-F": 1}, order_id=order, customer_id=customer) for _ in range(3)]
    await asyncio.sleep(0.01)
    middle = _now()
    await asyncio.sleep(0.01)
    later = [await client.run({"SKU-F": 1}, order_id=order) for _ in range(2)]
    other = await client.run({"SKU-F": 1}, customer_id=customer)
    newest_first = lambda sagas: [s.saga_id for s in reversed(sagas)]  # noqa: E731

    assert await listed(client, order_id=order) == newest_first(first + later)
    assert await listed(client, customer_id=customer) == newest_first([*first, other])
    assert await listed(client, order_id=order, customer_id=customer) == newest_first(first)
    assert await listed(client, order_id=order, created_after=middle) == newest_first(later)
    assert await listed(client, order_id=order, created_before=middle) == newest_first(first)
    assert await listed(client, order_id="ORD-nobody") == []
    completed = await listed(client, order_id=order, status=pb.SAGA_STATUS_COMPLETED)
    assert completed == newest_first(first + later)
    assert await listed(client, order_id=order, status=pb.SAGA_STATUS_FAILED) == []
    assert await listed(client, order_id=order, kind=pb.SAGA_KIND_RESERVATION) == newest_first(first + later)
    assert await listed(client, order_id=order, kind=pb.SAGA_KIND_TRANSFER) == []
    got = await client.coordinator.GetSaga(pb.GetSagaRequest(saga_id=other.saga_id))
    assert got.saga.kind == pb.SAGA_KIND_RESERVATION

    # The reservation's state: a COMPLETED saga's stays RESERVED until it is released.
    reserved, released = common_pb2.RESERVATION_STATE_RESERVED, common_pb2.RESERVATION_STATE_RELEASED
    assert await listed(client, customer_id=customer, reservation_state=reserved) == newest_first([*first, other])
    await client.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=other.saga_id))
    assert await listed(client, customer_id=customer, reservation_state=reserved) == newest_first(first)
    assert await listed(client, customer_id=customer, reservation_state=released) == [other.saga_id]


async def test_bad_filters_are_refused_with_the_field(client):
    for request, field in (
        (pb.ListSagasRequest(order_id="x" * 257), "order_id"),
        (pb.ListSagasRequest(reservation_state=99), "reservation_state"),
        (pb.ListSagasRequest(kind=99), "kind"),
        (
            pb.ListSagasRequest(created_after=Timestamp(seconds=2_000_000_000), created_before=Timestamp(seconds=1)),
            "created_after",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.coordinator.ListSagas(request)
        failure = RpcFailure.from_error(caught.value)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and [f for f, _ in failure.violations] == [field]


async def test_filters_keep_to_the_callers_tenant(token_mesh):  # noqa: F811
    """A filter never reaches another tenant's sagas: the same order id, each sees its own."""
    admin, a, b = (TokenClient(token_mesh, name) for name in ("admin", "a", "b"))
    try:
        await admin.seed([WH("WH-T")], [("WH-T", "SKU-T", 100)])
        order = f"ORD-{uuid.uuid4().hex[:8]}"
        sa = await a.run({"SKU-T": 1}, order_id=order, customer_id=f"CUST-A-{order}")
        sb = await b.run({"SKU-T": 1}, order_id=order)
        assert await listed(a, order_id=order) == [sa.saga_id]
        assert await listed(b, order_id=order) == [sb.saga_id]
        assert await listed(admin, order_id=order) == [sb.saga_id, sa.saga_id]
        assert await listed(b, order_id=order, customer_id=sa.request.customer_id) == []
        await admin.check_books()
    finally:
        for c in (admin, a, b):
            await c.close()
