"""`invsaga demo` and `invsaga start --watch` as a user runs them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.test_foundation import grpcurl
from tests.saga_support import WH, MeshClient
from tests.support import start_mesh

INVSAGA = str(Path(sys.executable).parent / "invsaga")


def test_demo_runs_every_scenario_and_exits_zero():
    result = subprocess.run(
        [INVSAGA, "demo"], capture_output=True, text=True, timeout=240, env={"COLUMNS": "220", "PATH": "/usr/bin:/bin"}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "all 21 scenarios ended as expected" in out
    plans = {
        line.split("│")[1].strip(): line.split("│")[4].strip()
        for line in out.splitlines()
        if "strategy " in line and "│" in line
    }
    # The four strategies pick different warehouses for the same order (docs in invsaga/demo_data.yaml).
    chosen = {name: plan.split("×")[0] for name, plan in plans.items()}
    assert len(set(chosen.values())) == 4, plans


async def test_start_watch_cli_and_grpcurl_watch_show_the_whole_event_sequence(tmp_path):
    mesh = start_mesh(tmp_path)
    c = MeshClient(mesh)
    try:
        await c.seed([WH("WH-G")], [("WH-G", "SKU-G", 10)])
        order = tmp_path / "order.yaml"
        order.write_text("order_id: ORD-CLI\nallocation_strategy: PRIORITY\nitems:\n  - {sku: SKU-G, quantity: 2}\n")
        started = subprocess.run(
            [INVSAGA, "start", str(order), "--watch", "--coordinator", mesh.address("coordinator")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        saga_id = started.stdout.splitlines()[0].strip()
        assert "SAGA_COMPLETED" in started.stdout  # the last event line printed while watching

        watched = grpcurl(
            "-d",
            json.dumps({"saga_id": saga_id}),
            mesh.address("coordinator"),
            "invsaga.coordinator.v1.SagaCoordinatorService/WatchSaga",
        )
        assert watched.returncode == 0, watched.stderr
        decoder = json.JSONDecoder()
        text, events, pos = watched.stdout, [], 0
        while pos < len(text.rstrip()):
            obj, end = decoder.raw_decode(text, pos)
            events.append(obj["event"])
            pos = end
            while pos < len(text) and text[pos].isspace():
                pos += 1
        assert [int(e["seq"]) for e in events] == list(range(1, len(events) + 1))
        assert events[0]["type"] == "SAGA_EVENT_TYPE_SAGA_STARTED"
        assert events[-1]["type"] == "SAGA_EVENT_TYPE_SAGA_COMPLETED"
        assert events[-1]["status"] == "SAGA_STATUS_COMPLETED"
        steps = [e["step"] for e in events if e["type"] == "SAGA_EVENT_TYPE_STEP_SUCCEEDED"]
        assert steps == [
            "QueryWarehouses",
            "CheckAvailability",
            "AllocateInventory",
            "LockInventory",
            "GeneratePicklist",
            "Notify",
        ]

        # The outcome alone, as an operator types it: event types by name.
        outcome = grpcurl(
            "-d",
            json.dumps(
                {"saga_id": saga_id, "event_types": ["SAGA_EVENT_TYPE_SAGA_COMPLETED", "SAGA_EVENT_TYPE_SAGA_FAILED"]}
            ),
            mesh.address("coordinator"),
            "invsaga.coordinator.v1.SagaCoordinatorService/WatchSaga",
        )
        assert outcome.returncode == 0, outcome.stderr
        assert json.loads(outcome.stdout)["event"] == events[-1]
    finally:
        await c.close()
        mesh.stop()


def _postgres_of(data_dir: Path) -> list[int]:
    """Pids of PostgreSQL server processes whose command line names ``data_dir``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"postgres") and str(data_dir).encode() in b" ".join(argv):
            pids.append(int(cmdline.parent.name))
    return pids


def _address(out: str, service: str) -> str:
    """The address ``invsaga up --random-ports`` printed for ``service``."""
    match = re.search(rf"^  {service} +grpc://(\S+)", out, re.MULTILINE)
    assert match, out
    return match.group(1)


def test_up_without_a_url_serves_the_demo_data_on_an_embedded_postgres_and_ctrl_c_stops_it(tmp_path):
    import signal

    import grpc

    from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc

    data = tmp_path / "data"
    env = {"PATH": "/usr/bin:/bin", "INVSAGA_LOG_LEVEL": "WARNING", "HOME": str(tmp_path)}
    up = subprocess.Popen(
        [INVSAGA, "up", "--random-ports", "--data-dir", str(data), "--log-dir", str(tmp_path / "logs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines = []
        for line in up.stdout:
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        out = "".join(lines)
        assert f"embedded PostgreSQL in {data / 'postgres'}" in out, out
        assert "demo data:" in out, out
        assert _postgres_of(data / "postgres"), "the embedded server runs in the data directory"
        with grpc.insecure_channel(_address(out, "inventory")) as channel:
            stock = inventory_pb2_grpc.InventoryServiceStub(channel).ListStock(
                inventory_pb2.ListStockRequest(), timeout=10
            )
        assert stock.stock, "the demo stock is there"
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
    assert up.returncode == 0, rest
    assert not _postgres_of(data / "postgres"), "Ctrl-C leaves no postgres process behind"


def test_up_again_keeps_what_the_first_run_changed(tmp_path):
    """The demo data is seeded into an empty database only: stock consumed through a picklist
    during the first run is still consumed after a restart on the same data directory."""
    import signal

    import grpc

    from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
    from invsaga.logistics.v1 import logistics_pb2, logistics_pb2_grpc
    from invsaga.common.v1 import common_pb2
    from tests.saga_support import order
    from invsaga.coordinator.v1 import coordinator_pb2, coordinator_pb2_grpc

    data = tmp_path / "data"
    env = {"PATH": "/usr/bin:/bin", "INVSAGA_LOG_LEVEL": "WARNING", "HOME": str(tmp_path)}

    def up() -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen(
            [INVSAGA, "up", "--random-ports", "--data-dir", str(data), "--log-dir", str(tmp_path / "logs")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        out = "".join(lines)
        assert "Ctrl-C stops" in out, f"invsaga up did not come up (status {proc.wait(timeout=30)}): {out}"
        return proc, out

    def stop(proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest

    def level(channel, warehouse_id: str, sku: str):
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        return stub.GetStock(inventory_pb2.GetStockRequest(warehouse_id=warehouse_id, sku=sku), timeout=10).stock

    first, out = up()
    try:
        assert "demo data:" in out and "kept" not in out, out
        with (
            grpc.insecure_channel(_address(out, "coordinator")) as coord,
            grpc.insecure_channel(_address(out, "logistics")) as logi,
            grpc.insecure_channel(_address(out, "inventory")) as inv,
        ):
            stock = (
                inventory_pb2_grpc.InventoryServiceStub(inv)
                .ListStock(inventory_pb2.ListStockRequest(), timeout=10)
                .stock
            )
            row = max(stock, key=lambda s: s.available)
            started = coordinator_pb2_grpc.SagaCoordinatorServiceStub(coord).StartSaga(
                coordinator_pb2.StartSagaRequest(request=order({row.sku: 1})), timeout=10
            )
            watch = coordinator_pb2_grpc.SagaCoordinatorServiceStub(coord).WatchSaga(
                coordinator_pb2.WatchSagaRequest(saga_id=started.saga_id), timeout=30
            )
            assert list(watch)[-1].event.type == coordinator_pb2.SAGA_EVENT_TYPE_SAGA_COMPLETED
            picking = logistics_pb2_grpc.LogisticsServiceStub(logi)
            [picklist] = picking.ListPicklists(
                logistics_pb2.ListPicklistsRequest(saga_id=started.saga_id), timeout=10
            ).picklists
            for status in (common_pb2.PICKLIST_STATUS_PROCESSING, common_pb2.PICKLIST_STATUS_COMPLETED):
                picking.UpdatePicklistStatus(
                    logistics_pb2.UpdatePicklistStatusRequest(picklist_id=picklist.picklist_id, status=status),
                    timeout=10,
                )
            consumed = level(inv, picklist.warehouse_id, row.sku)
    finally:
        stop(first)
    second, out = up()
    try:
        assert "demo data: kept" in out, out
        with grpc.insecure_channel(_address(out, "inventory")) as inv:
            after = level(inv, picklist.warehouse_id, row.sku)
        assert (after.on_hand, after.locked) == (consumed.on_hand, consumed.locked)
    finally:
        stop(second)
