"""The access table of docs/security.md, held against a real mesh as every kind of caller.

Two meshes (one per module-scoped parameter): mutual TLS, where certificates say who calls
(API clients add a token for their tenant), and tokens only, where every process presents its
own service token. In each, every RPC that any process serves (listed by reflection, its
methods from the service descriptors, so a new RPC cannot be forgotten) is called with an
empty request by: no credentials, an invalid token, clients of tenants A and B, an admin, the
coordinator and each participant. Only the code matters: UNAUTHENTICATED, PERMISSION_DENIED,
or anything else (the call got through to its servicer, which may well refuse the empty
request). Then the issue's reproductions: refused writes that leave the books untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from invsaga.allocation.v1 import allocation_pb2, allocation_pb2_grpc
from invsaga.certs import CLIENT, make_certs
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.launcher import Mesh, random_ports
from invsaga.logistics.v1 import logistics_pb2, logistics_pb2_grpc
from invsaga.notify.v1 import notify_pb2
from invsaga.runtime import security
from invsaga.runtime.config import PARTICIPANTS, SERVICES
from invsaga.runtime.security import bearer_interceptors, hash_token
from invsaga.warehouse.v1 import warehouse_pb2, warehouse_pb2_grpc
from tests.saga_support import WH, MeshClient
from tests.support import SuiteMesh, new_pg_database

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
ADMIN_CERT = "ops"  # mapped to admin by INVSAGA_TLS_ROLES; the default would make it a client
TIMEOUT = 10.0
ANSWERED = "answered"  # any code but the two of refusal: the call reached its servicer
NO_CONNECTION = "UNAVAILABLE"  # mTLS without a certificate: the handshake fails


def documented_access() -> dict[str, frozenset[str]]:
    """``/package.Service/Method`` -> its allowed callers, from the table in docs/security.md."""
    text = DOC.read_text(encoding="utf-8")
    table = text.split("<!-- access-table", 1)[1].split("<!-- end access-table", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \|$", table, flags=re.MULTILINE)
    assert rows, "no access table in docs/security.md"
    access = {f"/{rpc}": frozenset(c.strip() for c in callers.split(",")) for rpc, callers in rows}
    assert len(access) == len(rows), "an RPC is listed twice in docs/security.md"
    return access


def test_the_documented_table_is_the_enforced_one():
    """Every method of every invsaga service is in the doc, with the callers security.ACCESS lets in."""
    documented = documented_access()
    ours = {
        f"/{service.full_name}/{method.name}"
        for module in (warehouse_pb2, inventory_pb2, allocation_pb2, logistics_pb2, notify_pb2, pb)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert ours <= documented.keys(), f"RPCs missing from docs/security.md: {sorted(ours - documented.keys())}"
    assert ours == set(security.ACCESS), f"RPCs missing from security.ACCESS: {sorted(ours - set(security.ACCESS))}"
    for method in ours:
        rule = security.ACCESS[method]
        assert documented[method] == rule.roles | rule.services, method
    for method, callers in documented.items():
        assert (callers == {"anyone"}) == security.is_public(method), method


# -- callers -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Who:
    label: str
    role: str  # anonymous, client, admin, coordinator or service
    process: str = ""  # the participant of a service identity
    token: str | None = None  # sent as a bearer token
    cert: str | None = None  # mTLS: the certificate presented (None: none)


def token_of(label: str) -> str:
    return f"{label}-token-{uuid.uuid5(uuid.NAMESPACE_URL, label).hex}"


def token_callers() -> list[Who]:
    return [
        Who("anonymous", "anonymous"),
        Who("invalid token", "anonymous", token="not-a-configured-token"),
        Who("client A", "client", token=token_of("client-a")),
        Who("client B", "client", token=token_of("client-b")),
        Who("client, older hash setting", "client", token=token_of("legacy")),
        Who("admin", "admin", token=token_of("admin")),
        Who("coordinator", "coordinator", token=token_of("coordinator")),
        *(Who(p, "service", process=p, token=token_of(p)) for p in PARTICIPANTS),
    ]


def mtls_callers() -> list[Who]:
    return [
        Who("no certificate", "anonymous"),
        Who("invalid token", "anonymous", token="not-a-configured-token", cert=CLIENT),
        Who("client certificate", "client", cert=CLIENT),
        Who("client A", "client", token=token_of("client-a"), cert=CLIENT),
        Who("client B", "client", token=token_of("client-b"), cert=CLIENT),
        Who("admin", "admin", cert=ADMIN_CERT),
        Who("coordinator", "coordinator", cert="coordinator"),
        *(Who(p, "service", process=p, cert=p) for p in PARTICIPANTS),
    ]


def expected(who: Who, allowed: frozenset[str], mode: str) -> str:
    if mode == "mtls" and who.cert is None:
        return NO_CONNECTION
    if "anyone" in allowed:
        return ANSWERED
    if who.role == "anonymous":
        return "UNAUTHENTICATED"
    if who.role in allowed or (who.role == "service" and who.process in allowed):
        return ANSWERED
    return "PERMISSION_DENIED"


def outcome(code: grpc.StatusCode) -> str:
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE):
        return code.name
    return ANSWERED


# -- the meshes --------------------------------------------------------------------------------
@dataclass
class SecuredMesh:
    mode: str
    mesh: Mesh
    certs: Path
    callers: list[Who]

    def credentials(self, who: Who) -> grpc.ChannelCredentials | None:
        if self.mode != "mtls":
            return None
        pair = {}
        if who.cert:
            pair = {
                "private_key": (self.certs / f"{who.cert}-key.pem").read_bytes(),
                "certificate_chain": (self.certs / f"{who.cert}.pem").read_bytes(),
            }
        return grpc.ssl_channel_credentials(root_certificates=(self.certs / "ca.pem").read_bytes(), **pair)

    def channel(self, who: Who, service: str) -> grpc.aio.Channel:
        interceptors = bearer_interceptors(who.token) if who.token else None
        credentials = self.credentials(who)
        address = self.mesh.address(service)
        if credentials is None:
            return grpc.aio.insecure_channel(address, interceptors=interceptors)
        return grpc.aio.secure_channel(address, credentials, interceptors=interceptors)

    def who(self, label: str) -> Who:
        return next(w for w in self.callers if w.label == label)


def _wait_serving(secured: SecuredMesh, service: str, timeout: float = 60.0) -> None:
    """SERVING over the mesh's own transport (TLS under mTLS), with an admin's credentials."""
    admin = secured.who("admin")
    credentials = secured.credentials(admin)
    address = secured.mesh.address(service)
    deadline = time.monotonic() + timeout
    with grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            proc = secured.mesh.procs[service]
            assert proc.poll() is None, f"{service} exited with {proc.returncode}"
            try:
                request = health_pb2.HealthCheckRequest()
                if stub.Check(request, timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"{service} not SERVING within {timeout:.0f}s")


@pytest.fixture(scope="module", params=["mtls", "token"])
def secured(request, tmp_path_factory) -> SecuredMesh:
    mode = request.param
    workdir = tmp_path_factory.mktemp(f"access-{mode}")
    certs = workdir / "certs"
    make_certs(certs, identities=(*SERVICES, CLIENT, ADMIN_CERT))
    clients = [f"{hash_token(token_of('client-a'))}:client:A", f"{hash_token(token_of('client-b'))}:client:B"]
    env = {"INVSAGA_LOG_LEVEL": "WARNING", "INVSAGA_AUTH": mode}
    per_process: dict[str, dict[str, str]] = {}
    if mode == "mtls":
        callers = mtls_callers()
        env |= {
            "INVSAGA_TLS_CA": str(certs / "ca.pem"),
            "INVSAGA_TLS_ROLES": f"{ADMIN_CERT}:admin",
            "INVSAGA_AUTH_TOKENS": ",".join(clients),
        }
        per_process = {
            s: {"INVSAGA_TLS_CERT": str(certs / f"{s}.pem"), "INVSAGA_TLS_KEY": str(certs / f"{s}-key.pem")}
            for s in SERVICES
        }
    else:
        callers = token_callers()
        grants = [
            *clients,
            f"{hash_token(token_of('admin'))}:admin",
            f"{hash_token(token_of('coordinator'))}:coordinator",
            *(f"{hash_token(token_of(p))}:service:{p}" for p in PARTICIPANTS),
        ]
        env |= {"INVSAGA_AUTH_TOKENS": ",".join(grants), "INVSAGA_AUTH_TOKEN_HASHES": hash_token(token_of("legacy"))}
        per_process = {s: {"INVSAGA_SERVICE_TOKEN": token_of(s)} for s in SERVICES}
    mesh = SuiteMesh(
        ports=random_ports(),
        database_url=new_pg_database(),
        data_dir=str(workdir / "data"),
        log_dir=str(workdir / "logs"),
        env=env,
    )
    secured = SecuredMesh(mode, mesh, certs, callers)
    order_ = [*PARTICIPANTS, "coordinator"]
    try:
        mesh.check_ports()
        for service in order_:
            mesh.start_one(service, per_process[service])
        for service in order_:
            _wait_serving(secured, service)
        yield secured
    finally:
        mesh.stop()


# -- every RPC as everyone ---------------------------------------------------------------------
async def served_methods(secured: SecuredMesh, service: str) -> list[tuple[str, object]]:
    """Every method ``service``'s process serves: reflection lists its services (no
    credentials needed but the transport's), the descriptors give their methods."""
    async with secured.channel(secured.who("admin"), service) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT
        )
        reply = await call.read()
        call.cancel()
    names = [s.name for s in reply.list_services_response.service]
    pool = descriptor_pool.Default()
    return [(f"/{name}/{method.name}", method) for name in names for method in pool.FindServiceByName(name).methods]


async def call_code(channel: grpc.aio.Channel, path: str, method) -> grpc.StatusCode:
    """The code of ``path`` called with an empty request (no messages on a request stream;
    a response stream read to its first message)."""
    try:
        if not method.client_streaming and not method.server_streaming:
            await channel.unary_unary(path)(b"", timeout=TIMEOUT)
            return grpc.StatusCode.OK
        if method.client_streaming:
            # No request iterator: one the server refuses before reading it would cancel the
            # call locally, hiding the server's status.
            kind = channel.stream_stream if method.server_streaming else channel.stream_unary
            call = kind(path)(timeout=TIMEOUT)
            with contextlib.suppress(Exception):  # the call may be over already (refused)
                await call.done_writing()
            if not method.server_streaming:
                await call
                return grpc.StatusCode.OK
        else:
            call = channel.unary_stream(path)(b"", timeout=TIMEOUT)
        if await call.read() is grpc.aio.EOF:
            return await call.code()
        call.cancel()  # a first answer is enough (Health/Watch never ends)
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        return error.code()


async def test_every_rpc_answers_every_caller_as_the_table_says(secured):
    documented = documented_access()
    methods = {service: await served_methods(secured, service) for service in SERVICES}
    served = {path for listed in methods.values() for path, _ in listed}
    assert served <= documented.keys(), f"served but not in docs/security.md: {sorted(served - documented.keys())}"
    assert {p for p in documented if p.startswith("/invsaga.")} <= served, "documented but served by no process"

    channels = {(who.label, s): secured.channel(who, s) for who in secured.callers for s in SERVICES}
    try:
        plan = [
            (who, service, path, method)
            for who in secured.callers
            for service in SERVICES
            for path, method in methods[service]
        ]
        codes = await asyncio.gather(*(call_code(channels[(w.label, s)], p, m) for w, s, p, m in plan))
    finally:
        for channel in channels.values():
            await channel.close()
    wrong = [
        f"{who.label} -> {path}: {code.name}, expected {expected(who, documented[path], secured.mode)}"
        for (who, _, path, _), code in zip(plan, codes)
        if outcome(code) != expected(who, documented[path], secured.mode)
    ]
    assert not wrong, f"{len(wrong)} of {len(plan)} calls ({secured.mode}):\n" + "\n".join(wrong)
    # Each caller was asked everything: 6 processes' RPCs (health and reflection on each).
    assert len(plan) == len(secured.callers) * sum(len(m) for m in methods.values())


async def test_auth_health_entry_says_callers_are_checked(secured):
    async with secured.channel(secured.who("admin"), "inventory") as channel:
        call = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=security.AUTH_HEALTH_NAME), timeout=TIMEOUT
        )
        assert (await call).status == health_pb2.HealthCheckResponse.SERVING
        assert (security.AUTH_MODE_HEADER, secured.mode) in tuple(await call.trailing_metadata())


# -- the reproductions -------------------------------------------------------------------------
class Client(MeshClient):
    """MeshClient's calls as ``who``."""

    def __init__(self, secured: SecuredMesh, who: Who) -> None:
        self.mesh = secured.mesh
        self.channels = {s: secured.channel(who, s) for s in SERVICES}
        self.coordinator = pb_grpc.SagaCoordinatorServiceStub(self.channels["coordinator"])
        self.warehouse = warehouse_pb2_grpc.WarehouseServiceStub(self.channels["warehouse"])
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(self.channels["inventory"])
        self.allocation = allocation_pb2_grpc.AllocationServiceStub(self.channels["allocation"])
        self.logistics = logistics_pb2_grpc.LogisticsServiceStub(self.channels["logistics"])
        self.inventory_steps = inventory_pb2_grpc.InventoryStepServiceStub(self.channels["inventory"])


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def lock_everything(wid: str, sku: str, quantity: int) -> inventory_pb2.ExecuteRequest:
    """The issue's attack: lock_inventory of a made-up saga, all units of a SKU."""
    saga_id = uuid.uuid4().hex
    until = int(time.time()) + 3600
    return inventory_pb2.ExecuteRequest(
        context=common_pb2.StepContext(
            saga_id=saga_id, step=common_pb2.SAGA_STEP_LOCK_INVENTORY, idempotency_key=f"{saga_id}:lock"
        ),
        lock_inventory=inventory_pb2.LockInventoryInput(
            allocation_id=uuid.uuid4().hex,
            lines=[common_pb2.AllocationLine(warehouse_id=wid, sku=sku, quantity=quantity)],
            expires_at=Timestamp(seconds=until),
            order_id="ORD-MADE-UP",
        ),
    )


async def test_refused_writes_change_no_stock(secured):
    wid, sku, units = f"WH-{secured.mode.upper()}", f"SKU-{secured.mode.upper()}", 800
    admin = Client(secured, secured.who("admin"))
    others = {w.label: Client(secured, w) for w in secured.callers if w.role not in ("admin", "coordinator")}
    try:
        await admin.seed([WH(wid)], [(wid, sku, units)])
        for label, client in others.items():
            who = secured.who(label)
            attempts = {
                "Execute lock_inventory": client.inventory_steps.Execute(
                    lock_everything(wid, sku, units), timeout=TIMEOUT
                ),
                "SetStock": client.inventory.SetStock(
                    inventory_pb2.SetStockRequest(warehouse_id=wid, sku=sku, product_id="P", on_hand=0, bin="X"),
                    timeout=TIMEOUT,
                ),
                "AdjustStock": client.inventory.AdjustStock(
                    inventory_pb2.AdjustStockRequest(warehouse_id=wid, sku=sku, delta=-units, reason="x"),
                    timeout=TIMEOUT,
                ),
                "ReleaseLocks": client.inventory.ReleaseLocks(
                    inventory_pb2.ReleaseLocksRequest(saga_id="any"), timeout=TIMEOUT
                ),
                "CancelAllocation": client.allocation.CancelAllocation(
                    allocation_pb2.CancelAllocationRequest(allocation_id="any"), timeout=TIMEOUT
                ),
                "UpdatePicklistStatus": client.logistics.UpdatePicklistStatus(
                    logistics_pb2.UpdatePicklistStatusRequest(
                        picklist_id="any", status=common_pb2.PICKLIST_STATUS_CANCELLED
                    ),
                    timeout=TIMEOUT,
                ),
            }
            refused = (
                {grpc.StatusCode.UNAVAILABLE}
                if secured.mode == "mtls" and who.cert is None
                else {grpc.StatusCode.UNAUTHENTICATED}
                if who.role == "anonymous"
                else {grpc.StatusCode.PERMISSION_DENIED}
            )
            for name, attempt in attempts.items():
                if name == "ReleaseLocks" and who.process == "logistics":
                    attempt.cancel()  # logistics may release locks (a picklist's cancellation)
                    continue
                assert await _code(attempt) in refused, f"{label}: {name}"
        # The coordinator's identity opens the steps and nothing else; an admin, everything but the steps.
        coordinator = Client(secured, secured.who("coordinator"))
        try:
            assert (
                await _code(
                    coordinator.inventory.SetStock(
                        inventory_pb2.SetStockRequest(warehouse_id=wid, sku=sku, product_id="P", on_hand=0, bin="X"),
                        timeout=TIMEOUT,
                    )
                )
                == grpc.StatusCode.PERMISSION_DENIED
            )
        finally:
            await coordinator.close()
        assert await _code(admin.inventory_steps.Execute(lock_everything(wid, sku, units), timeout=TIMEOUT)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )

        (level,) = [s for s in await admin.stock() if (s.warehouse_id, s.sku) == (wid, sku)]
        assert (level.on_hand, level.locked, level.available) == (units, 0, units)
        assert not [lock for lock in await admin.held_locks() if lock.sku == sku]
        await admin.check_books()
    finally:
        for client in (admin, *others.values()):
            await client.close()


async def test_a_saga_runs_and_a_picklist_moves_its_stock(secured):
    """The identities the processes present open exactly what their code calls: the steps
    (coordinator), and inventory's HoldLocks/CommitLocks from logistics."""
    wid, sku = f"WH-RUN-{secured.mode.upper()}", f"SKU-RUN-{secured.mode.upper()}"
    admin = Client(secured, secured.who("admin"))
    tenant_a = Client(secured, secured.who("client A"))
    try:
        await admin.seed([WH(wid)], [(wid, sku, 10)])
        saga = await tenant_a.run({sku: 3}, preferred_warehouses=[wid])
        assert saga.status == pb.SAGA_STATUS_COMPLETED, saga
        (picklist,) = (
            await admin.logistics.ListPicklists(
                logistics_pb2.ListPicklistsRequest(saga_id=saga.saga_id), timeout=TIMEOUT
            )
        ).picklists
        for status in (common_pb2.PICKLIST_STATUS_PROCESSING, common_pb2.PICKLIST_STATUS_COMPLETED):
            await admin.logistics.UpdatePicklistStatus(
                logistics_pb2.UpdatePicklistStatusRequest(picklist_id=picklist.picklist_id, status=status),
                timeout=TIMEOUT,
            )
        (level,) = [s for s in await admin.stock() if (s.warehouse_id, s.sku) == (wid, sku)]
        assert (level.on_hand, level.locked, level.available) == (7, 0, 7)
        await admin.check_books()
    finally:
        await admin.close()
        await tenant_a.close()
