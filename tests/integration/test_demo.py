"""`invsaga demo` and `invsaga start --watch` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.test_foundation import grpcurl
from tests.saga_support import WH, MeshClient
from tests.support import start_mesh

INVSAGA = str(Path(sys.executable).parent / "invsaga")


def test_demo_runs_every_scenario_and_exits_zero():
    result = subprocess.run([INVSAGA, "demo"], capture_output=True, text=True, timeout=240, env={"COLUMNS": "220", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "all 17 scenarios ended as expected" in out
    plans = {line.split("│")[1].strip(): line.split("│")[4].strip() for line in out.splitlines() if "strategy " in line and "│" in line}
    # The four strategies pick different warehouses for the same order (docs in invsaga/demo_data.yaml).
    chosen = {name: plan.split("×")[0] for name, plan in plans.items()}
    assert len(set(chosen.values())) == 4, plans


async def test_start_watch_cli_and_grpcurl_watch_show_the_whole_event_sequence(tmp_path):
    mesh = start_mesh("sqlite", tmp_path)
    c = MeshClient(mesh)
    try:
        await c.seed([WH("WH-G")], [("WH-G", "SKU-G", 10)])
        order = tmp_path / "order.yaml"
        order.write_text("order_id: ORD-CLI\nallocation_strategy: PRIORITY\nitems:\n  - {sku: SKU-G, quantity: 2}\n")
        started = subprocess.run(
            [INVSAGA, "start", str(order), "--watch", "--coordinator", mesh.address("coordinator")],
            capture_output=True, text=True, timeout=60,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        saga_id = started.stdout.splitlines()[0].strip()
        assert "SAGA_COMPLETED" in started.stdout  # the last event line printed while watching

        watched = grpcurl(
            "-d", json.dumps({"saga_id": saga_id}), mesh.address("coordinator"),
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
        assert steps == ["QueryWarehouses", "CheckAvailability", "AllocateInventory", "LockInventory", "GeneratePicklist", "Notify"]

        # The outcome alone, as an operator types it: event types by name.
        outcome = grpcurl(
            "-d", json.dumps({"saga_id": saga_id, "event_types": ["SAGA_EVENT_TYPE_SAGA_COMPLETED", "SAGA_EVENT_TYPE_SAGA_FAILED"]}),
            mesh.address("coordinator"), "invsaga.coordinator.v1.SagaCoordinatorService/WatchSaga",
        )
        assert outcome.returncode == 0, outcome.stderr
        assert json.loads(outcome.stdout)["event"] == events[-1]
    finally:
        await c.close()
        mesh.stop()
