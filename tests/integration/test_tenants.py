"""API clients scoped by tenant: a saga belongs to the tenant of the token that started it.

The rule (coordinator/server.py ``tenant_scope``): a caller with a tenant sees and changes
only its tenant's sagas unless it is an admin; an admin, or a client token without a tenant,
sees every saga. Another tenant's saga is NOT_FOUND with the very answer a missing one gets.
Request ids stay unique across tenants: one taken by another tenant is ALREADY_EXISTS, with
nothing of that saga in the answer.

The first tests call the servicer in-process on a real database, as each caller (the auth
interceptor sets ``CURRENT_CALLER`` the same way); the last runs a real mesh with tokens.
"""

from __future__ import annotations

import contextlib
import uuid
from types import SimpleNamespace

import grpc
import pytest

from coordinator import models
from coordinator.inventory_saga import INVENTORY_SAGA
from coordinator.commands import event, new_saga
from coordinator.gate import SagaGate
from coordinator.hub import EventHub
from coordinator.server import CoordinatorServicer
from coordinator.store import SagaStore, now_ms, request_hash
from invsaga.allocation.v1 import allocation_pb2_grpc
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from invsaga.inventory.v1 import inventory_pb2_grpc
from invsaga.launcher import Mesh, random_ports, wait_serving
from invsaga.runtime.config import SERVICES, load_settings
from invsaga.runtime.db import open_service_engine
from invsaga.runtime.errors import AlreadyExists, NotFound, RpcFailure
from invsaga.runtime.security import CURRENT_CALLER, Caller, hash_token
from invsaga.warehouse.v1 import warehouse_pb2_grpc
from tests.saga_support import WH, MeshClient, order
from tests.support import SuiteMesh, new_pg_database

ADMIN = Caller("ops", "admin")
CLIENT_A = Caller("client-a", "client", "A")
CLIENT_B = Caller("client-b", "client", "B")
UNSCOPED = Caller("reporting", "client")


@contextlib.contextmanager
def as_caller(who: Caller):
    token = CURRENT_CALLER.set(who)
    try:
        yield
    finally:
        CURRENT_CALLER.reset(token)


class _Engine:
    """What the servicer needs of the engine; sagas are recorded, never driven."""

    owner = "test-replica"
    lease_ms = 60_000
    metrics = None
    definition = INVENTORY_SAGA

    def __init__(self) -> None:
        self.known: set[str] = set()
        self.queued: list[str] = []
        self.gate = SagaGate(1 << 30)

    def enqueue(self, saga_id: str, priority: int, urgent: bool, row=None) -> None:
        self.queued.append(saga_id)

    def abandon(self, saga_id: str) -> None:
        pass

    def cancel_local(self, saga_id: str, reason: str = "") -> None:
        pass


@pytest.fixture(scope="module")
async def coordinator():
    settings = load_settings("coordinator", env={}, database_url=new_pg_database())
    db = await open_service_engine(settings, models.metadata, models.__file__)
    store = SagaStore(db)
    store.start()
    servicer = CoordinatorServicer(_Engine(), store, EventHub(), settings)

    async def saga(tenant: str, status: int = pb.SAGA_STATUS_COMPLETED) -> pb.Saga:
        request = order({"SKU-1": 1})
        saga = new_saga(uuid.uuid4().hex, request, INVENTORY_SAGA)
        saga.status = status
        _, found = store.create(
            saga,
            [event(saga, 1, pb.SAGA_EVENT_TYPE_SAGA_STARTED)],
            req_hash=request_hash(request),
            deadline=now_ms() + 60_000,
            owner="elsewhere",
            lease_ms=60_000,
            tenant=tenant,
        )
        assert await found is None
        return saga

    yield SimpleNamespace(servicer=servicer, store=store, saga=saga)
    await store.stop()
    await db.dispose()


async def _not_found(call) -> NotFound:
    with pytest.raises(NotFound) as caught:
        await call
    return caught.value


async def _listed(servicer: CoordinatorServicer) -> set[str]:
    reply = await servicer.ListSagas(pb.ListSagasRequest(page_size=1000), None)
    return {s.saga_id for s in reply.sagas}


async def test_reads_see_only_the_callers_tenant(coordinator):
    svc = coordinator.servicer
    a, b, untenanted = await coordinator.saga("A"), await coordinator.saga("B"), await coordinator.saga("")
    missing = uuid.uuid4().hex
    with as_caller(CLIENT_A):
        assert (await svc.GetSaga(pb.GetSagaRequest(saga_id=a.saga_id), None)).saga.saga_id == a.saga_id
        listed = await _listed(svc)
        assert a.saga_id in listed and not listed & {b.saga_id, untenanted.saga_id}
        hidden = await _not_found(svc.GetSaga(pb.GetSagaRequest(saga_id=b.saga_id), None))
        absent = await _not_found(svc.GetSaga(pb.GetSagaRequest(saga_id=missing), None))
        # Word for word the answer to a saga that does not exist (only the id differs).
        assert hidden.message.replace(b.saga_id, "?") == absent.message.replace(missing, "?")
        assert hidden.reason == absent.reason == "SAGA_NOT_FOUND" and hidden.code == absent.code
        watch = svc.WatchSaga(pb.WatchSagaRequest(saga_id=b.saga_id), None)
        await _not_found(watch.__anext__())
    with as_caller(CLIENT_B):
        assert await _listed(svc) & {a.saga_id, b.saga_id, untenanted.saga_id} == {b.saga_id}
    for who in (ADMIN, UNSCOPED):
        with as_caller(who):
            assert {a.saga_id, b.saga_id, untenanted.saga_id} <= await _listed(svc)
            assert (await svc.GetSaga(pb.GetSagaRequest(saga_id=b.saga_id), None)).saga.saga_id == b.saga_id


async def test_cancel_and_resume_of_another_tenants_saga_are_not_found_and_change_nothing(coordinator):
    svc, store = coordinator.servicer, coordinator.store
    done = await coordinator.saga("A", pb.SAGA_STATUS_COMPLETED)
    parked = await coordinator.saga("A", pb.SAGA_STATUS_FAILED)
    with as_caller(CLIENT_B):
        await _not_found(svc.CancelSaga(pb.CancelSagaRequest(saga_id=done.saga_id), None))
        await _not_found(svc.ResumeSaga(pb.ResumeSagaRequest(saga_id=parked.saga_id), None))
    assert await store.status_of(done.saga_id) == pb.SAGA_STATUS_COMPLETED
    assert await store.status_of(parked.saga_id) == pb.SAGA_STATUS_FAILED
    assert done.saga_id not in svc.engine.queued and parked.saga_id not in svc.engine.queued
    with as_caller(CLIENT_A):
        cancelled = (await svc.CancelSaga(pb.CancelSagaRequest(saga_id=done.saga_id), None)).saga
        resumed = (await svc.ResumeSaga(pb.ResumeSagaRequest(saga_id=parked.saga_id), None)).saga
    assert (cancelled.saga_id, cancelled.status) == (done.saga_id, pb.SAGA_STATUS_COMPENSATING)
    assert (resumed.saga_id, resumed.status) == (parked.saga_id, pb.SAGA_STATUS_COMPENSATING)
    assert {done.saga_id, parked.saga_id} <= set(svc.engine.queued)


async def test_start_records_the_tenant_and_keeps_request_ids_private(coordinator):
    svc, store = coordinator.servicer, coordinator.store
    request = order({"SKU-1": 2})
    with as_caller(CLIENT_A):
        started = await svc.StartSaga(pb.StartSagaRequest(request=request), None)
        again = await svc.StartSaga(pb.StartSagaRequest(request=request), None)  # idempotent for A
    assert again.saga_id == started.saga_id
    assert (await store.load(started.saga_id)).tenant == "A"
    with as_caller(CLIENT_B), pytest.raises(AlreadyExists) as caught:
        await svc.StartSaga(pb.StartSagaRequest(request=request), None)  # the same payload, even
    assert caught.value.reason == "REQUEST_ID_REUSED"
    assert started.saga_id not in caught.value.message and not caught.value.metadata
    with as_caller(ADMIN):  # an admin sees every saga: the usual idempotent answer
        assert (await svc.StartSaga(pb.StartSagaRequest(request=request), None)).saga_id == started.saga_id
        untenanted = await svc.StartSaga(pb.StartSagaRequest(request=order({"SKU-1": 1})), None)
    assert (await store.load(untenanted.saga_id)).tenant == ""


# -- over a real mesh, with tokens ------------------------------------------------------

TOKENS = {  # name: (token, role[:tenant])
    "a": ("tenant-a-token", "client:A"),
    "b": ("tenant-b-token", "client:B"),
    "admin": ("operator-token", "admin"),
    "coordinator": ("coordinator-token", "coordinator"),
    "service": ("participant-token", "service"),
    # Logistics moves a picklist's locks at inventory: it calls as itself (docs/security.md).
    "logistics": ("logistics-token", "service:logistics"),
}


class _Bearer:
    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details):
        return details._replace(metadata=grpc.aio.Metadata(*(details.metadata or ()), self.header))


# grpc.aio files an interceptor under one kind only: one class per kind.
class _UnaryBearer(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _StreamBearer(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._details(details), request)


class TokenClient(MeshClient):
    """A MeshClient whose every call carries the token of ``name``."""

    def __init__(self, mesh: Mesh, name: str) -> None:
        self.mesh = mesh
        token = TOKENS[name][0]
        bearer = [_UnaryBearer(token), _StreamBearer(token)]
        self.channels = {s: grpc.aio.insecure_channel(mesh.address(s), interceptors=bearer) for s in mesh.services}
        self.coordinator = pb_grpc.SagaCoordinatorServiceStub(self.channels["coordinator"])
        self.warehouse = warehouse_pb2_grpc.WarehouseServiceStub(self.channels["warehouse"])
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(self.channels["inventory"])
        self.allocation = allocation_pb2_grpc.AllocationServiceStub(self.channels["allocation"])


@pytest.fixture(scope="module")
def token_mesh(tmp_path_factory):
    """Every process with tokens only; each presents its own token on its outgoing calls."""
    workdir = tmp_path_factory.mktemp("tenants")
    mesh = SuiteMesh(
        ports=random_ports(),
        database_url=new_pg_database(),
        data_dir=str(workdir / "data"),
        log_dir=str(workdir / "logs"),
        env={
            "INVSAGA_LOG_LEVEL": "WARNING",
            "INVSAGA_AUTH": "token",
            "INVSAGA_AUTH_TOKENS": ",".join(f"{hash_token(token)}:{role}" for token, role in TOKENS.values()),
        },
    )
    order = [s for s in SERVICES if s != "coordinator"] + ["coordinator"]
    try:
        for service in order:
            own = TOKENS[service if service in ("coordinator", "logistics") else "service"][0]
            mesh.start_one(service, {"INVSAGA_SERVICE_TOKEN": own})
        for service in order:
            wait_serving(mesh.address(service), 60, mesh.procs[service], service)
    except BaseException:
        mesh.stop()
        raise
    yield mesh
    mesh.stop()


async def _code(call) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return RpcFailure.from_error(caught.value)


async def test_tenants_a_and_b_are_isolated_over_a_real_mesh(token_mesh):
    admin, a, b = (TokenClient(token_mesh, name) for name in ("admin", "a", "b"))
    try:
        await admin.seed([WH("WH-A")], [("WH-A", "SKU-1", 100)])
        request_a = order({"SKU-1": 3})
        sa = (await a.coordinator.StartSaga(pb.StartSagaRequest(request=request_a), timeout=10)).saga_id
        sb = await b.start({"SKU-1": 2})
        assert (await a.wait(sa)).status == pb.SAGA_STATUS_COMPLETED
        assert (await b.wait(sb)).status == pb.SAGA_STATUS_COMPLETED

        # B reads, watches, cancels, resumes A's saga: the answers a missing saga gets.
        missing = uuid.uuid4().hex
        absent = await _code(b.coordinator.GetSaga(pb.GetSagaRequest(saga_id=missing)))
        for call in (
            b.coordinator.GetSaga(pb.GetSagaRequest(saga_id=sa)),
            b.events(sa),
            b.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=sa)),
            b.coordinator.ResumeSaga(pb.ResumeSagaRequest(saga_id=sa)),
        ):
            hidden = await _code(call)
            assert hidden.code == absent.code == grpc.StatusCode.NOT_FOUND
            assert hidden.message.replace(sa, "?") == absent.message.replace(missing, "?")
            assert hidden.reason == absent.reason
        # Nor does B's StartSaga with A's request id give A's saga away.
        taken = await _code(b.coordinator.StartSaga(pb.StartSagaRequest(request=request_a)))
        assert taken.code == grpc.StatusCode.ALREADY_EXISTS and sa not in taken.message
        assert sa not in taken.metadata.values()

        async def listed(client: MeshClient) -> set[str]:
            reply = await client.coordinator.ListSagas(pb.ListSagasRequest(page_size=1000))
            return {s.saga_id for s in reply.sagas}

        assert await listed(a) == {sa} and await listed(b) == {sb} and await listed(admin) == {sa, sb}
        # B's cancel changed nothing: A's reservation still holds.
        assert (await a.get(sa)).status == pb.SAGA_STATUS_COMPLETED
        assert sum(lock.quantity for lock in await admin.held_locks(sa)) == 3

        # Each releases its own; an admin may read either.
        # (A COMPLETED saga stays COMPLETED; its reservation is RELEASED, its stock free.)
        released = common_pb2.RESERVATION_STATE_RELEASED
        cancelled = (await a.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=sa))).saga
        assert (cancelled.saga_id, cancelled.status, cancelled.reservation.state) == (
            sa,
            pb.SAGA_STATUS_COMPLETED,
            released,
        )
        await b.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=sb))
        assert (await a.get(sa)).reservation.state == released
        assert (await admin.get(sb)).reservation.state == released
        assert await admin.held_locks() == []
        await admin.check_books()
    finally:
        for client in (admin, a, b):
            await client.close()
