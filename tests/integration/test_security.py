"""Mutual TLS across the mesh, bearer tokens on top, and how a process says auth is off.

The full access table (every RPC as every caller) is tests/integration/test_access.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
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
from invsaga.launcher import ROOT, dev_defaults, free_port, random_ports, wait_serving as wait_plaintext
from invsaga.runtime import security
from invsaga.runtime.config import SERVICES, ConfigError, load_settings
from invsaga.runtime.security import AUTH_HEALTH_NAME, AUTH_MODE_HEADER, hash_token, token_matches
from invsaga.warehouse.v1 import warehouse_pb2, warehouse_pb2_grpc
from tests.saga_support import TERMINAL, order
from tests.support import SuiteMesh, new_pg_database

TOKEN = "s3cret-operator-token"
ADMIN = "ops"  # an operator's certificate, an admin by INVSAGA_TLS_ROLES
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


def wait_serving(
    address: str, credentials: grpc.ChannelCredentials, proc: subprocess.Popen, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    with grpc.secure_channel(address, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{address} exited with {proc.returncode}"
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise AssertionError(f"{address} not SERVING within {timeout}s")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    make_certs(directory, identities=(*SERVICES, CLIENT, ADMIN))
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
    """All six processes under mutual TLS (inferred from INVSAGA_TLS_CLIENT_AUTH); bearer
    tokens of the older setting are accepted on top, as clients."""
    workdir = tmp_path_factory.mktemp("secure-mesh")
    health_port = free_port()
    mesh = SuiteMesh(
        ports=random_ports(),
        database_url=new_pg_database(),
        data_dir=str(workdir / "data"),
        log_dir=str(workdir / "logs"),
        env={
            "INVSAGA_LOG_LEVEL": "WARNING",
            "INVSAGA_TLS_CA": str(certs / "ca.pem"),
            "INVSAGA_TLS_CLIENT_AUTH": "require",
            "INVSAGA_AUTH_TOKEN_HASHES": f"{hash_token('an-old-token')},{hash_token(TOKEN)}",
            "INVSAGA_TLS_ROLES": f"{ADMIN}:admin",
        },
    )
    mesh.check_ports()
    try:
        for service in [*SERVICES[1:], SERVICES[0]]:
            extra = {
                "INVSAGA_TLS_CERT": str(certs / f"{service}.pem"),
                "INVSAGA_TLS_KEY": str(certs / f"{service}-key.pem"),
            }
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
        context=common_pb2.StepContext(
            saga_id="not-a-saga", step=common_pb2.SAGA_STEP_LOCK_INVENTORY, idempotency_key="k"
        )
    )
    for identity in (CLIENT, ADMIN, "inventory", "logistics"):
        async with grpc.aio.secure_channel(address, creds(certs, identity)) as channel:
            steps = inventory_pb2_grpc.InventoryStepServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await steps.Execute(execute, timeout=5)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, identity
            assert "InventoryStepService/Execute" in err.value.details() and repr(identity) in err.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await steps.Compensate(inventory_pb2.CompensateRequest(context=execute.context), timeout=5)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, identity
            # The stream is refused as it opens, before any message is read.
            assert await steps.ExecuteStream(timeout=5).code() == grpc.StatusCode.PERMISSION_DENIED, identity
            # Reads are for admins and the participants; a plain client certificate is no admin.
            admin = inventory_pb2_grpc.InventoryServiceStub(channel)
            expected = grpc.StatusCode.PERMISSION_DENIED if identity == CLIENT else grpc.StatusCode.OK
            assert await _code(admin.ListStock(inventory_pb2.ListStockRequest(), timeout=5)) == expected, identity


async def test_a_bearer_token_on_top_of_a_certificate_is_checked(secure_mesh, certs):
    async with grpc.aio.secure_channel(secure_mesh.address("coordinator"), creds(certs)) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        request = pb.StartSagaRequest(request=order({"SKU-T": 1}))
        for metadata in (bearer("wrong-token"), [("authorization", TOKEN)], [("authorization", "Bearer ")]):
            assert await _code(stub.StartSaga(request, metadata=metadata, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
            assert (
                await _code(stub.ListSagas(pb.ListSagasRequest(), metadata=metadata, timeout=5))
                == grpc.StatusCode.UNAUTHENTICATED
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.WatchSaga(pb.WatchSagaRequest(saga_id="x"), metadata=metadata, timeout=5):
                    pass
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Garbage bytes with a wrong token: refused for the token, not for the bytes.
        raw = channel.unary_unary("/invsaga.coordinator.v1.SagaCoordinatorService/StartSaga")
        assert (
            await _code(raw(b"\xff\xfe garbage", metadata=bearer("wrong-token"), timeout=5))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        # Without a token the certificate speaks: a client of the public API.
        listed = await stub.ListSagas(pb.ListSagasRequest(), timeout=5)
        assert not [s for s in listed.sagas if s.request.order_id == request.request.order_id]
        # A valid token stands for the caller: a client token opens no admin RPC, even over an admin's certificate.
    async with grpc.aio.secure_channel(secure_mesh.address("inventory"), creds(certs, ADMIN)) as channel:
        stock = inventory_pb2_grpc.InventoryServiceStub(channel)
        assert await _code(stock.ListStock(inventory_pb2.ListStockRequest(), timeout=5)) == grpc.StatusCode.OK
        assert await _code(stock.ListStock(inventory_pb2.ListStockRequest(), metadata=bearer(), timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    async with grpc.aio.secure_channel(secure_mesh.address("coordinator"), creds(certs)) as channel:
        # Health needs nothing but the handshake, on the TLS port and on the plaintext probe port.
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        ).status == health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secure_mesh.health_port}") as probe:
        reply = await health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_and_the_auth_health_entry_need_no_token(secure_mesh, certs):
    """What docs/security.md tells operators to run, with grpcurl."""
    tls = ["-cacert", str(certs / "ca.pem"), "-cert", str(certs / "client.pem"), "-key", str(certs / "client-key.pem")]
    address = secure_mesh.address("coordinator")
    listed = subprocess.run([str(GRPCURL), *tls, address, "list"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert "invsaga.coordinator.v1.SagaCoordinatorService" in listed.stdout
    method = "invsaga.coordinator.v1.SagaCoordinatorService/ListSagas"
    denied = subprocess.run(
        [str(GRPCURL), *tls, "-H", "authorization: Bearer wrong", "-d", "{}", address, method],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert denied.returncode != 0 and "Unauthenticated" in denied.stderr, denied.stderr
    served = subprocess.run(
        [str(GRPCURL), *tls, "-H", f"authorization: Bearer {TOKEN}", "-d", "{}", address, method],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert served.returncode == 0, served.stderr
    json.loads(served.stdout or "{}")
    auth = subprocess.run(
        [
            str(GRPCURL),
            *tls,
            "-v",
            "-d",
            json.dumps({"service": AUTH_HEALTH_NAME}),
            address,
            "grpc.health.v1.Health/Check",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert auth.returncode == 0, auth.stderr
    assert '"status": "SERVING"' in auth.stdout and f"{AUTH_MODE_HEADER}: mtls" in auth.stdout, auth.stdout


async def test_the_right_certificate_and_token_are_served_end_to_end(secure_mesh, certs):
    """A saga runs to COMPLETED: the coordinator's certificate opens every step under mutual TLS."""
    admin, client = creds(certs, ADMIN), creds(certs)
    async with (
        grpc.aio.secure_channel(secure_mesh.address("warehouse"), admin) as wh,
        grpc.aio.secure_channel(secure_mesh.address("inventory"), admin) as inv,
        grpc.aio.secure_channel(secure_mesh.address("coordinator"), client) as coord,
    ):
        await warehouse_pb2_grpc.WarehouseServiceStub(wh).UpsertWarehouse(
            warehouse_pb2.UpsertWarehouseRequest(
                warehouse=common_pb2.Warehouse(
                    warehouse_id="WH-SEC",
                    name="secure",
                    location=common_pb2.Location(lat=31.2, lon=121.5),
                    capacity=1000,
                    status=common_pb2.WAREHOUSE_STATUS_ACTIVE,
                    priority=5,
                    cost=common_pb2.CostModel(per_unit=1),
                    skus=["SKU-SEC"],
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
        saga = (
            await stub.GetSaga(pb.GetSagaRequest(saga_id=started.saga_id), metadata=bearer("an-old-token"), timeout=5)
        ).saga
        assert saga.status in TERMINAL
        assert saga.status == pb.SAGA_STATUS_COMPLETED, saga
        assert [(line.warehouse_id, line.quantity) for line in saga.allocation.lines] == [("WH-SEC", 3)]


async def test_server_tls_without_client_authentication(certs, tmp_path):
    """TLS alone (a development mesh: authentication off): any client trusting the CA is
    served, with or without a certificate; plaintext is not."""
    mesh = SuiteMesh(
        ports=random_ports(),
        database_url=new_pg_database(),
        data_dir=str(tmp_path / "data"),
        log_dir=str(tmp_path / "logs"),
        env={
            "INVSAGA_LOG_LEVEL": "WARNING",
            "INVSAGA_TLS_CA": str(certs / "ca.pem"),
            "INVSAGA_TLS_CERT": str(certs / "warehouse.pem"),
            "INVSAGA_TLS_KEY": str(certs / "warehouse-key.pem"),
        },
        services=["warehouse"],
    )
    try:
        mesh.start_one("warehouse")
        wait_serving(mesh.address("warehouse"), creds(certs, identity=None), mesh.procs["warehouse"])
        async with grpc.aio.secure_channel(mesh.address("warehouse"), creds(certs, identity=None)) as channel:
            await warehouse_pb2_grpc.WarehouseServiceStub(channel).ListWarehouses(
                warehouse_pb2.ListWarehousesRequest(), timeout=5
            )
        async with grpc.aio.insecure_channel(mesh.address("warehouse")) as channel:
            assert (
                await _code(
                    warehouse_pb2_grpc.WarehouseServiceStub(channel).ListWarehouses(
                        warehouse_pb2.ListWarehousesRequest(), timeout=3
                    )
                )
                == grpc.StatusCode.UNAVAILABLE
            )
    finally:
        mesh.stop()


def test_security_settings_fail_fast(certs):
    ok = {
        "INVSAGA_TLS_CA": str(certs / "ca.pem"),
        "INVSAGA_TLS_CERT": str(certs / "coordinator.pem"),
        "INVSAGA_TLS_KEY": str(certs / "coordinator-key.pem"),
        "INVSAGA_TLS_CLIENT_AUTH": "require",
    }
    settings = load_settings("coordinator", env={**ok, "INVSAGA_AUTH_TOKEN_HASHES": hash_token(TOKEN).upper()})
    assert settings.tls_client_auth and settings.auth_mode == "mtls"
    assert settings.auth_tokens == ((hash_token(TOKEN), "client", ""),)
    digest = hash_token("x")
    tokens = {
        "INVSAGA_AUTH_TOKENS": f"{digest}:client:eu-1, {hash_token('c')}:coordinator,{hash_token('l')}:service:logistics",
        "INVSAGA_SERVICE_TOKEN": "c",
    }
    settings = load_settings("coordinator", env=tokens)
    assert settings.auth_mode == "token" and settings.service_token == "c" and "'c'" not in repr(settings)
    assert (digest, "client", "eu-1") in settings.auth_tokens and (
        hash_token("l"),
        "service",
        "logistics",
    ) in settings.auth_tokens
    roles = load_settings("warehouse", env={**ok, "INVSAGA_TLS_ROLES": "ops:admin,shop:client:eu"}).tls_roles
    assert roles == (("ops", "admin", ""), ("shop", "client", "eu"))
    assert load_settings("coordinator", env={}).auth_mode == ""  # nothing configured: deny
    assert load_settings("coordinator", env={"INVSAGA_AUTH": "off"}).auth_mode == "off"
    assert load_settings("coordinator", env={**tokens, "INVSAGA_REQUIRE_AUTH": "true"}).require_auth
    bad = [
        {"INVSAGA_TLS_CERT": ok["INVSAGA_TLS_CERT"]},
        {**ok, "INVSAGA_TLS_CA": ""},
        {**ok, "INVSAGA_TLS_CLIENT_AUTH": "maybe"},
        {"INVSAGA_TLS_CA": ok["INVSAGA_TLS_CA"]},
        {**ok, "INVSAGA_TLS_KEY": "/nonexistent/key.pem"},
        {"INVSAGA_AUTH": "token", "INVSAGA_SERVICE_TOKEN": "c"},  # no tokens
        {"INVSAGA_AUTH": "maybe"},
        {"INVSAGA_AUTH": "mtls"},  # no certificates
        {**ok, "INVSAGA_AUTH": "mtls", "INVSAGA_TLS_CLIENT_AUTH": "none"},
        {"INVSAGA_AUTH_TOKEN_HASHES": "plaintext-token"},
        {**tokens, "INVSAGA_SERVICE_TOKEN": ""},  # the coordinator could not call its steps
        {**tokens, "INVSAGA_AUTH_TOKENS": f"{digest}:root"},
        {**tokens, "INVSAGA_AUTH_TOKENS": f"{digest}:client:no spaces"},
        {**tokens, "INVSAGA_AUTH_TOKENS": f"{digest}:service:billing"},  # not a participant
        {**tokens, "INVSAGA_AUTH_TOKENS": f"{digest}:admin:eu"},  # an admin has no tenant
        {**tokens, "INVSAGA_AUTH_TOKENS": f"{digest}:client:A,{digest}:admin"},
        {**ok, "INVSAGA_TLS_ROLES": "ops:superuser"},
        {"INVSAGA_AUTH": "off", "INVSAGA_REQUIRE_AUTH": "true"},
        {"INVSAGA_REQUIRE_AUTH": "true"},
        {**tokens, "INVSAGA_REQUIRE_AUTH": "maybe"},
    ]
    for env in bad:
        with pytest.raises(ConfigError) as err:
            load_settings("coordinator", env=env)
        assert "plaintext-token" not in str(err.value) and digest not in str(err.value), err.value
    assert token_matches(TOKEN, [hash_token("x"), hash_token(TOKEN)])
    assert not token_matches("x" + TOKEN, [hash_token(TOKEN)])


def test_a_process_that_requires_auth_does_not_start_without(tmp_path):
    env = {**os.environ, "INVSAGA_AUTH": "off", "INVSAGA_REQUIRE_AUTH": "true", "INVSAGA_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "services.warehouse"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "INVSAGA_REQUIRE_AUTH" in done.stderr and "'off'" in done.stderr


def _auth_health(address: str) -> tuple[int, str]:
    with grpc.insecure_channel(address) as channel:
        reply, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
            health_pb2.HealthCheckRequest(service=AUTH_HEALTH_NAME), timeout=5
        )
    return reply.status, dict(call.trailing_metadata())[AUTH_MODE_HEADER]


@pytest.mark.parametrize(
    "env, mode, warning",
    [
        # What invsaga.launcher.Mesh sets when nothing says otherwise.
        ({}, "off", "authentication is OFF"),
        # A security setting, but no mode and no tokens: nothing is let in.
        ({"INVSAGA_TLS_CLIENT_AUTH": "none"}, "unconfigured", "authentication is not configured"),
    ],
)
async def test_a_process_without_authentication_says_so(tmp_path, env, mode, warning):
    mesh = SuiteMesh(
        ports=random_ports(),
        database_url=new_pg_database(),
        data_dir=str(tmp_path / "data"),
        log_dir=str(tmp_path / "logs"),
        env={"INVSAGA_LOG_LEVEL": "WARNING", **env},
        services=["warehouse"],
    )
    try:
        mesh.start_one("warehouse")
        address = mesh.address("warehouse")
        wait_plaintext(address, 60, mesh.procs["warehouse"], "warehouse")  # health answers anyone
        assert _auth_health(address) == (health_pb2.HealthCheckResponse.NOT_SERVING, mode)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = warehouse_pb2_grpc.WarehouseServiceStub(channel)
            listed = await _code(
                stub.ListWarehouses(warehouse_pb2.ListWarehousesRequest(), metadata=bearer(), timeout=5)
            )
            upsert = await _code(stub.UpsertWarehouse(warehouse_pb2.UpsertWarehouseRequest(), timeout=5))
        if mode == "off":
            assert (listed, upsert) == (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
        else:
            assert (listed, upsert) == (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED)
        log = (tmp_path / "logs" / "warehouse.log").read_text()
        assert warning in log
        assert TOKEN not in log
    finally:
        mesh.stop()


def test_the_warning_of_auth_off_comes_back_every_minute(caplog):
    class Loop:
        def __init__(self) -> None:
            self.scheduled: list[tuple[float, object, tuple]] = []

        def call_later(self, delay, callback, *args):
            self.scheduled.append((delay, callback, args))

    loop = Loop()
    with caplog.at_level(logging.WARNING, logger="invsaga.security"):
        security._remind(loop, "authentication is OFF")
        for _ in range(2):
            delay, callback, args = loop.scheduled[-1]
            assert delay == 60
            callback(*args)
    assert [r.getMessage() for r in caplog.records] == ["authentication is OFF"] * 3


def test_dev_meshes_turn_auth_off_unless_told_otherwise():
    assert dev_defaults({}) == {"INVSAGA_AUTH": "off", "INVSAGA_HOST": "127.0.0.1"}
    assert dev_defaults({"INVSAGA_AUTH": "token", "INVSAGA_HOST": "0.0.0.0"}) == {
        "INVSAGA_AUTH": "token",
        "INVSAGA_HOST": "0.0.0.0",
    }
    # Tokens or client certificates configured: the mode follows from them (docs/security.md).
    assert "INVSAGA_AUTH" not in dev_defaults({"INVSAGA_AUTH_TOKENS": "x"})
    assert "INVSAGA_AUTH" not in dev_defaults({"INVSAGA_TLS_CLIENT_AUTH": "require"})
