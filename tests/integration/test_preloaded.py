"""The suite's meshes fork their processes from a preloaded parent (tests/preloaded.py); those
processes behave as exec'd ones do: their own session, name, port and log, their exit status as
Popen reports it, and none outlives what should stop it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest

from invsaga.launcher import random_ports, wait_serving
from invsaga.warehouse.v1 import warehouse_pb2, warehouse_pb2_grpc
from tests import preloaded
from tests.preloaded import PreloadedMesh
from tests.support import new_pg_database, proc_stat

ROOT = Path(__file__).resolve().parents[2]


def _mesh(tmp_path: Path) -> PreloadedMesh:
    return PreloadedMesh(
        ports=random_ports(),
        database_url=new_pg_database(),
        data_dir=str(tmp_path / "data"),
        log_dir=str(tmp_path / "logs"),
        env={"INVSAGA_LOG_LEVEL": "INFO"},
        services=["warehouse", "inventory"],
    )


def _running(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(_running(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_forked_process_has_its_own_session_name_port_and_log_and_reports_how_it_ended(tmp_path):
    mesh = _mesh(tmp_path).start()
    try:
        warehouse, inventory = mesh.procs["warehouse"], mesh.procs["inventory"]
        assert isinstance(warehouse, preloaded.Forked)
        for name, proc in mesh.procs.items():
            stat = proc_stat(proc.pid)
            assert stat is not None and int(stat[3]) == proc.pid, f"{name} does not lead its own session"
            assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == name
        with grpc.insecure_channel(mesh.address("warehouse")) as channel:  # its port came from its environment
            warehouse_pb2_grpc.WarehouseServiceStub(channel).ListWarehouses(
                warehouse_pb2.ListWarehousesRequest(), timeout=10
            )
        assert mesh.kill("inventory", signal.SIGKILL) == -signal.SIGKILL
        assert inventory.poll() == -signal.SIGKILL
        again = mesh.start_one("inventory")  # a second fork serves in its place
        wait_serving(mesh.address("inventory"), 60, again, "inventory")
        assert again.pid != inventory.pid
    finally:
        codes = mesh.stop()
    assert codes == {"warehouse": 0, "inventory": 0}  # SIGTERM: a clean exit, as when exec'd
    log = (tmp_path / "logs" / "warehouse.log").read_text()
    assert f"warehouse listening on {mesh.address('warehouse')}" in log and "shutting down warehouse" in log, log


def test_children_of_a_killed_parent_are_stopped_and_the_next_mesh_gets_a_new_parent(tmp_path):
    mesh = _mesh(tmp_path / "first").start()
    try:
        assert preloaded._parent is not None
        parent = preloaded._parent.proc
        pids = [proc.pid for proc in mesh.procs.values()]
        parent.kill()
        for proc in mesh.procs.values():
            assert proc.wait(timeout=30) == -signal.SIGKILL
        assert _gone_within(pids, 30)
    finally:
        mesh.stop()
    with _mesh(tmp_path / "second") as second:
        assert preloaded._parent.proc.pid != parent.pid
        assert all(proc.poll() is None for proc in second.procs.values())


LAUNCHER = """
import os, signal, sys
from tests import preloaded
from tests.preloaded import PreloadedMesh
from invsaga.launcher import random_ports
mesh = PreloadedMesh(ports=random_ports(), database_url=sys.argv[1], data_dir=sys.argv[2], services=["warehouse"])
mesh.start()
print(preloaded._parent.proc.pid, flush=True)
mesh.stop()
os.kill(os.getpid(), signal.SIGKILL)  # no clean exit: only its end closes the parent's stdin
"""


def test_the_parent_ends_when_the_worker_that_started_it_is_killed(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LAUNCHER), new_pg_database(), str(tmp_path / "data")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    [parent] = [int(pid) for pid in run.stdout.split()]
    assert _gone_within([parent], 30), f"the preloaded parent {parent} is still running"


@pytest.fixture(autouse=True)
def _linux_only():
    if not Path("/proc/self/stat").exists():
        pytest.skip("the process checks read /proc")
