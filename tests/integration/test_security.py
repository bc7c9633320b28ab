"""Mutual TLS across the mesh and bearer tokens on the coordinator, with real processes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from invsaga.certs import CLIENT, issue, make_ca, make_certs, service_dns_names, write_pair
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.launcher import Mesh, free_port, random_ports
from invsaga.runtime.config import SERVICES, ConfigError, load_settings
from invsaga.runtime.security import hash_token, token_matches
from invsaga.warehouse.v1 import warehouse_pb2, warehouse_pb2_grpc
from tests.saga_support import TERMINAL, order
from tests.support import new_pg_database

TOKEN = "s3cret-operator-token"
GRPCURL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "grpcurl"


def creds(certs: Path, identity: str | None = CLIENT, ca: Path | None = None) -> grpc.ChannelCredentials:
    """TLS credentials trusting the mesh CA, presenting ``identity``'s certificate (none if None)."""
    kwargs = {}
    if identity:
        kwargs = {
            "private_key": (certs / f"{identity}-key.pem").read_bytes(),
            "certificate_chain": (certs / f"{identity}.pem").read_bytes(),
        }
    return grpc.ssl_channel_credentials(root_certificates=(ca or certs / "ca.pem").read_bytes(), **kwargs)


def wait_serving(address: str, credentials: grpc.ChannelCredentials, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with grpc.secure_channel(address, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{address} exited with {proc.returncode}"
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise AssertionError(f"{address} not SERVING within {timeout}s")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    make_certs(directory)
    # A certificate named "coordinator" from a CA the mesh does not trust.
    rogue = directory / "rogue"
    rogue.mkdir()
    ca_key, ca_cert = make_ca("rogue CA")
    write_pair(rogue, "ca", ca_key, ca_cert)
    key, cert = issue(ca_key, ca_cert, "coordinator", service_dns_names("coordinator", "invsaga"))
    write_pair(rogue, "coordinator", key, cert)
    return directory


@pytest.fixture(scope="module")
def secure_mesh(certs, tmp_path_factory):
    """All six processes under mutual TLS; the coordinator also wants a bearer token."""
    workdir = tmp_path_factory.mktemp("secure-mesh")
    health_port = free_port()
    mesh = Mesh(
        ports=random_ports(),
        database_url=new_pg_database(),
        data_dir=str(workdir / "data"),
        log_dir=str(workdir / "logs"),
        env={
            "INVSAGA_LOG_LEVEL": "WARNING",
            "INVSAGA_TLS_CA": str(certs / "ca.pem"),
            "INVSAGA_TLS_CLIENT_AUTH": "require",
            "INVSAGA_AUTH_TOKEN_HASHES": f"{hash_token('an-old-token')},{hash_token(TOKEN)}",
        },
    )
    mesh.check_ports()
    try:
        for service in [*SERVICES[1:], SERVICES[0]]:
            extra = {"INVSAGA_TLS_CERT": str(certs / f"{service}.pem"), "INVSAGA_TLS_KEY": str(certs / f"{service}-key.pem")}
            if service == "coordinator":
                extra["INVSAGA_HEALTH_PORT"] = str(health_port)
            mesh.start_one(service, extra)
        for service in [*SERVICES[1:], SERVICES[0]]:
            wait_serving(mesh.address(service), creds(certs), mesh.procs[service])
        mesh.health_port = health_port  # type: ignore[attr-defined]
        yield mesh
    finally:
        mesh.stop()


def bearer(token: str = TOKEN) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_no_client_certificate_or_an_untrusted_one_is_refused(secure_mesh, certs):
    address = secure_mesh.address("inventory")
    attempts = {
        "plaintext": grpc.aio.insecure_channel(address),
        "TLS without a client certificate": grpc.aio.secure_channel(address, creds(certs, identity=None)),
        "certificate of an untrusted CA": grpc.aio.secure_channel(
            address,
            grpc.ssl_channel_credentials(
                root_certificates=(certs / "ca.pem").read_bytes(),
                private_key=(certs / "rogue" / "coordinator-key.pem").read_bytes(),
                certificate_chain=(certs / "rogue" / "coordinator.pem").read_bytes(),
            ),
        ),
    }
    for what, channel in attempts.items():
        async with channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            code = await _code(stub.ListStock(inventory_pb2.ListStockRequest(), timeout=5))
            assert code == grpc.StatusCode.UNAVAILABLE, what


async def test_steps_are_served_only_to_the_coordinator_identity(secure_mesh, certs):
    address = secure_mesh.address("inventory")
    execute = inventory_pb2.ExecuteRequest(
        context=common_pb2.StepContext(saga_id="not-a-saga", step=common_pb2.SAGA_STEP_LOCK_INVENTORY, idempotency_key="k")
    )
    for identity in (CLIENT, "inventory", "logistics"):
        async with grpc.aio.secure_channel(address, creds(certs, identity)) as channel:
            steps = inventory_pb2_grpc.InventoryStepServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await steps.Execute(execute, timeout=5)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, identity
            assert "coordinator" in err.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await steps.Compensate(inventory_pb2.CompensateRequest(context=execute.context), timeout=5)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, identity
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await steps.ExecuteBatch(inventory_pb2.ExecuteBatchRequest(requests=[execute]), timeout=5)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, identity
            # The stream is refused as it opens, before any message is read.
            assert await steps.ExecuteStream(timeout=5).code() == grpc.StatusCode.PERMISSION_DENIED, identity
            # Admin and query RPCs stay open to any certificate of the mesh CA.
            admin = inventory_pb2_grpc.InventoryServiceStub(channel)
            await admin.ListStock(inventory_pb2.ListStockRequest(), timeout=5)


async def test_missing_or_wrong_token_is_unauthenticated(secure_mesh, certs):
    async with grpc.aio.secure_channel(secure_mesh.address("coordinator"), creds(certs)) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        request = pb.StartSagaRequest(request=order({"SKU-T": 1}))
        for metadata in (None, bearer("wrong-token"), [("authorization", TOKEN)], [("authorization", "Bearer ")]):
            assert await _code(stub.StartSaga(request, metadata=metadata, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
            assert await _code(stub.ListSagas(pb.ListSagasRequest(), metadata=metadata, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.WatchSaga(pb.WatchSagaRequest(saga_id="x"), metadata=metadata, timeout=5):
                    pass
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Garbage bytes without a token: refused for the token, not for the bytes.
        raw = channel.unary_unary("/invsaga.coordinator.v1.SagaCoordinatorService/StartSaga")
        assert await _code(raw(b"\xff\xfe garbage", timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
        # Nothing was started by any of it.
        listed = await stub.ListSagas(pb.ListSagasRequest(), metadata=bearer(), timeout=5)
        assert not [s for s in listed.sagas if s.request.order_id == request.request.order_id]
        # Health needs no token, on the TLS port and on the plaintext probe port.
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secure_mesh.health_port}") as probe:
        reply = await health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_no_token_but_the_api_does(secure_mesh, certs):
    tls = ["-cacert", str(certs / "ca.pem"), "-cert", str(certs / "client.pem"), "-key", str(certs / "client-key.pem")]
    address = secure_mesh.address("coordinator")
    listed = subprocess.run([str(GRPCURL), *tls, address, "list"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert "invsaga.coordinator.v1.SagaCoordinatorService" in listed.stdout
    method = "invsaga.coordinator.v1.SagaCoordinatorService/ListSagas"
    denied = subprocess.run([str(GRPCURL), *tls, "-d", "{}", address, method], capture_output=True, text=True, timeout=30)
    assert denied.returncode != 0 and "Unauthenticated" in denied.stderr, denied.stderr
    served = subprocess.run(
        [str(GRPCURL), *tls, "-H", f"authorization: Bearer {TOKEN}", "-d", "{}", address, method],
        capture_output=True, text=True, timeout=30,
    )
    assert served.returncode == 0, served.stderr
    json.loads(served.stdout or "{}")


async def test_the_right_certificate_and_token_are_served_end_to_end(secure_mesh, certs):
    """A saga runs to COMPLETED: the coordinator's certificate opens every step under mutual TLS."""
    client = creds(certs)
    async with (
        grpc.aio.secure_channel(secure_mesh.address("warehouse"), client) as wh,
        grpc.aio.secure_channel(secure_mesh.address("inventory"), client) as inv,
        grpc.aio.secure_channel(secure_mesh.address("coordinator"), client) as coord,
    ):
        await warehouse_pb2_grpc.WarehouseServiceStub(wh).UpsertWarehouse(
            warehouse_pb2.UpsertWarehouseRequest(
                warehouse=common_pb2.Warehouse(
                    warehouse_id="WH-SEC", name="secure", location=common_pb2.Location(lat=31.2, lon=121.5),
                    capacity=1000, status=common_pb2.WAREHOUSE_STATUS_ACTIVE, priority=5,
                    cost=common_pb2.CostModel(per_unit=1), skus=["SKU-SEC"],
                )
            ),
            timeout=5,
        )
        await inventory_pb2_grpc.InventoryServiceStub(inv).SetStock(
            inventory_pb2.SetStockRequest(warehouse_id="WH-SEC", sku="SKU-SEC", product_id="P", on_hand=10, bin="A"),
            timeout=5,
        )
        stub = pb_grpc.SagaCoordinatorServiceStub(coord)
        started = await stub.StartSaga(pb.StartSagaRequest(request=order({"SKU-SEC": 3})), metadata=bearer(), timeout=5)
        async for _ in stub.WatchSaga(pb.WatchSagaRequest(saga_id=started.saga_id), metadata=bearer(), timeout=30):
            pass
        saga = (await stub.GetSaga(pb.GetSagaRequest(saga_id=started.saga_id), metadata=bearer("an-old-token"), timeout=5)).saga
        assert saga.status in TERMINAL
        assert saga.status == pb.SAGA_STATUS_COMPLETED, saga
        assert [(l.warehouse_id, l.quantity) for l in saga.allocation.lines] == [("WH-SEC", 3)]


async def test_server_tls_without_client_authentication(certs, tmp_path):
    """TLS alone: any client trusting the CA is served, with or without a certificate."""
    mesh = Mesh(ports=random_ports(), database_url=new_pg_database(), data_dir=str(tmp_path / "data"),
                log_dir=str(tmp_path / "logs"),
                env={"INVSAGA_LOG_LEVEL": "WARNING", "INVSAGA_TLS_CA": str(certs / "ca.pem"),
                     "INVSAGA_TLS_CERT": str(certs / "warehouse.pem"), "INVSAGA_TLS_KEY": str(certs / "warehouse-key.pem")},
                services=["warehouse"])
    try:
        mesh.start_one("warehouse")
        wait_serving(mesh.address("warehouse"), creds(certs, identity=None), mesh.procs["warehouse"])
        async with grpc.aio.secure_channel(mesh.address("warehouse"), creds(certs, identity=None)) as channel:
            await warehouse_pb2_grpc.WarehouseServiceStub(channel).ListWarehouses(warehouse_pb2.ListWarehousesRequest(), timeout=5)
        async with grpc.aio.insecure_channel(mesh.address("warehouse")) as channel:
            assert await _code(
                warehouse_pb2_grpc.WarehouseServiceStub(channel).ListWarehouses(warehouse_pb2.ListWarehousesRequest(), timeout=3)
            ) == grpc.StatusCode.UNAVAILABLE
    finally:
        mesh.stop()


def test_security_settings_fail_fast(certs):
    ok = {"INVSAGA_TLS_CA": str(certs / "ca.pem"), "INVSAGA_TLS_CERT": str(certs / "coordinator.pem"),
          "INVSAGA_TLS_KEY": str(certs / "coordinator-key.pem"), "INVSAGA_TLS_CLIENT_AUTH": "require"}
    settings = load_settings("coordinator", env={**ok, "INVSAGA_AUTH_TOKEN_HASHES": hash_token(TOKEN).upper()})
    assert settings.tls_client_auth and settings.step_callers == ("coordinator",)
    assert settings.auth_token_hashes == (hash_token(TOKEN),)
    assert load_settings("coordinator", env={}).auth_token_hashes == ()
    bad = [
        {"INVSAGA_TLS_CERT": ok["INVSAGA_TLS_CERT"]},
        {**ok, "INVSAGA_TLS_CA": ""},
        {**ok, "INVSAGA_TLS_CLIENT_AUTH": "maybe"},
        {"INVSAGA_TLS_CA": ok["INVSAGA_TLS_CA"]},
        {**ok, "INVSAGA_TLS_KEY": "/nonexistent/key.pem"},
        {"INVSAGA_AUTH": "token"},
        {"INVSAGA_AUTH_TOKEN_HASHES": "plaintext-token"},
    ]
    for env in bad:
        with pytest.raises(ConfigError):
            load_settings("coordinator", env=env)
    assert token_matches(TOKEN, [hash_token("x"), hash_token(TOKEN)])
    assert not token_matches("x" + TOKEN, [hash_token(TOKEN)])
