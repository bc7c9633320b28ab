"""The foundation as an operator meets it: six real processes, grpcurl, health and SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from invsaga.launcher import Mesh, random_ports
from tests.support import SuiteMesh, new_pg_database, start_mesh

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
SERVICE_OF = {
    "coordinator": ["invsaga.coordinator.v1.SagaCoordinatorService"],
    "warehouse": ["invsaga.warehouse.v1.WarehouseService", "invsaga.warehouse.v1.WarehouseStepService"],
    "inventory": ["invsaga.inventory.v1.InventoryService", "invsaga.inventory.v1.InventoryStepService"],
    "allocation": ["invsaga.allocation.v1.AllocationService", "invsaga.allocation.v1.AllocationStepService"],
    "logistics": ["invsaga.logistics.v1.LogisticsService", "invsaga.logistics.v1.LogisticsStepService"],
    "notify": ["invsaga.notify.v1.NotifyService", "invsaga.notify.v1.NotifyStepService"],
}
COORDINATOR_RPCS = ["StartSaga", "GetSaga", "ListSagas", "WatchSaga", "CancelSaga", "ResumeSaga"]


def grpcurl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([GRPCURL, "-plaintext", *args], input=stdin, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    mesh = start_mesh(tmp_path_factory.mktemp("foundation"))
    yield mesh
    mesh.stop()


def test_grpcurl_lists_describes_and_checks_every_process(mesh):
    for service, names in SERVICE_OF.items():
        address = mesh.address(service)
        listed = grpcurl(address, "list")
        assert listed.returncode == 0, listed.stderr
        services = set(listed.stdout.split())
        assert {*names, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
        for name in names:
            described = grpcurl(address, "describe", name)
            assert described.returncode == 0, described.stderr
            if name.endswith("StepService"):
                assert "rpc Execute" in described.stdout and "rpc Compensate" in described.stdout
            if service == "coordinator":
                for rpc in COORDINATOR_RPCS:
                    assert f"rpc {rpc}" in described.stdout
        health = grpcurl(address, "grpc.health.v1.Health/Check")
        assert health.returncode == 0, health.stderr
        assert json.loads(health.stdout)["status"] == "SERVING"


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status


def test_sigterm_turns_health_not_serving_finishes_in_flight_calls_and_exits_zero(tmp_path):
    # A 2 s injected latency on every warehouse admin call stands for a slow in-flight request.
    mesh = SuiteMesh(
        ports=random_ports(),
        database_url=new_pg_database(),
        data_dir=str(tmp_path / "data"),
        log_dir=str(tmp_path / "logs"),
        services=("warehouse",),
        env={"INVSAGA_FAULTS": "kind=latency,delay=2,method=ListWarehouses", "INVSAGA_GRACE_PERIOD": "8s"},
    )
    mesh.start()
    address = mesh.address("warehouse")
    try:
        result: dict[str, object] = {}

        def slow_call() -> None:
            from invsaga.warehouse.v1 import warehouse_pb2, warehouse_pb2_grpc

            with grpc.insecure_channel(address) as channel:
                stub = warehouse_pb2_grpc.WarehouseServiceStub(channel)
                try:
                    result["reply"] = stub.ListWarehouses(warehouse_pb2.ListWarehousesRequest(), timeout=10)
                except grpc.RpcError as error:
                    result["error"] = error

        with grpc.insecure_channel(address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            caller = threading.Thread(target=slow_call)
            caller.start()
            time.sleep(0.5)  # the call is in flight
            sent = time.monotonic()
            mesh.procs["warehouse"].send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()  # an open stream would hold the server for the whole grace period
            caller.join(timeout=15)
            code = mesh.procs["warehouse"].wait(timeout=15)
            elapsed = time.monotonic() - sent
        assert "reply" in result, result.get("error")
        assert code == 0
        assert elapsed < 8
    finally:
        mesh.stop()


def test_generated_stubs_match_the_protos(tmp_path):
    from invsaga.runtime import protogen

    protogen.generate(tmp_path)
    root = Path(protogen.ROOT)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert generated, "nothing generated"
    for rel in generated:
        committed = root / rel
        assert committed.exists(), f"{rel} is not committed; run make protos"
        assert committed.read_text() == (tmp_path / rel).read_text(), f"{rel} is stale; run make protos"


def test_protos_pass_buf_lint():
    buf = shutil.which("buf") or str(Path(sys.executable).parent / "buf")
    result = subprocess.run(
        [buf, "lint"], cwd=Path(__file__).resolve().parents[2] / "protos", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_port_in_use_is_a_one_line_error(tmp_path):
    import socket

    ports = random_ports()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", ports["inventory"]))
    blocker.listen()
    try:
        env = {"INVSAGA_INVENTORY_ADDR": f"127.0.0.1:{ports['inventory']}"}
        # Ports an operator gave (a plain dict): random ones would be picked again instead.
        mesh = Mesh(ports=dict(ports), data_dir=str(tmp_path / "d"), env=env)
        with pytest.raises(Exception) as err:
            mesh.start()
        assert str(err.value) == f"port {ports['inventory']} is already in use (wanted by inventory)"
        single = subprocess.run(
            [sys.executable, "-m", "services.inventory", "--port", str(ports["inventory"])],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **__import__("os").environ,
                "INVSAGA_DATA_DIR": str(tmp_path / "e"),
                "INVSAGA_DATABASE_URL": new_pg_database(),
            },
        )
        assert single.returncode != 0
        assert single.stderr.strip().splitlines()[-1] == (
            f"inventory: port {ports['inventory']} is already in use (wanted by inventory)"
        )
    finally:
        blocker.close()


def test_bad_configuration_fails_fast_with_a_clear_message(tmp_path):
    env = {**__import__("os").environ, "INVSAGA_SAGA_TIMEOUT": "soon", "INVSAGA_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "services.warehouse", "--port", "1"], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 2
    assert "INVSAGA_SAGA_TIMEOUT" in result.stderr and "soon" in result.stderr
