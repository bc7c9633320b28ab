"""Observability end to end: one trace per saga across six real processes (a coordinator
restart included), and every process's /metrics after completed and compensated sagas."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client.parser import text_string_to_metric_families

from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2
from invsaga.runtime.config import METRICS_PORT_OFFSET, SERVICES
from tests.saga_support import WH, MeshClient
from tests.support import logs_tail, start_mesh

FAST_RETRY = {"INVSAGA_RETRY_INITIAL_INTERVAL": "20ms", "INVSAGA_RETRY_MAX_INTERVAL": "100ms"}


async def _until_step_started(client: MeshClient, saga_id: str, step: str, timeout: float = 20.0) -> None:
    async def follow() -> None:
        async for reply in client.coordinator.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id)):
            ev = reply.event
            if ev.type == pb.SAGA_EVENT_TYPE_STEP_STARTED and ev.step == step:
                return
        raise AssertionError(f"saga {saga_id} ended before {step} started")

    await asyncio.wait_for(follow(), timeout)


def _spans(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_one_trace_per_saga_across_six_processes_and_a_coordinator_restart(tmp_path):
    trace_file = tmp_path / "spans.jsonl"
    mesh = start_mesh(
        tmp_path,
        env={
            **FAST_RETRY,
            "INVSAGA_TRACE_FILE": str(trace_file),
            "INVSAGA_FAULTS": "kind=latency,delay=2,method=Execute,step=GENERATE_PICKLIST",
            "INVSAGA_LEASE": "1s",
            "INVSAGA_RECOVERY_INTERVAL": "500ms",
            "INVSAGA_LOG_LEVEL": "INFO",
        },
    )
    client = MeshClient(mesh)
    try:
        await client.seed([WH("WH-T1")], [("WH-T1", "SKU-T", 20)])
        saga_id = await client.start({"SKU-T": 3})
        await _until_step_started(client, saga_id, "GeneratePicklist")
        await asyncio.sleep(0.3)  # the Execute is on the wire, held by the injected latency
        mesh.kill("coordinator")
        mesh.start_one("coordinator")
        mesh.wait_ready("coordinator")
        saga = await client.wait(saga_id, timeout=30)
        assert saga.status == pb.SAGA_STATUS_COMPLETED, (saga, logs_tail(mesh))
        assert len(saga.trace_id) == 32 and saga.trace_id != "0" * 32

        spans = [s for s in _spans(trace_file) if s["trace_id"] == saga.trace_id]
        assert {s["service"] for s in spans} == set(SERVICES), {s["service"] for s in spans}
        # Both coordinator processes (before and after the SIGKILL) wrote into the saga's trace.
        coordinator_pids = {s["pid"] for s in spans if s["service"] == "coordinator"}
        assert len(coordinator_pids) == 2, coordinator_pids
        restarted = mesh.procs["coordinator"].pid
        assert restarted in coordinator_pids
        after = [s for s in spans if s["service"] == "coordinator" and s["pid"] == restarted]
        assert {"saga.GeneratePicklist", "saga.Notify"} <= {s["name"] for s in after}, sorted(s["name"] for s in after)
        # Every participant's server span hangs off a coordinator client span of the same trace.
        names = {(s["service"], s["name"]) for s in spans if s["kind"] == "SERVER"}
        for service, method in [
            ("coordinator", "/invsaga.coordinator.v1.SagaCoordinatorService/StartSaga"),
            ("warehouse", "/invsaga.warehouse.v1.WarehouseStepService/Execute"),
            ("inventory", "/invsaga.inventory.v1.InventoryStepService/Execute"),
            ("allocation", "/invsaga.allocation.v1.AllocationStepService/Execute"),
            ("logistics", "/invsaga.logistics.v1.LogisticsStepService/Execute"),
            ("notify", "/invsaga.notify.v1.NotifyStepService/Execute"),
        ]:
            assert (service, method) in names, sorted(names)
        ids = {s["span_id"] for s in spans}
        orphans = [s for s in spans if s["parent_id"] and s["parent_id"] not in ids]
        # Every parent is in the trace, but one: the GeneratePicklist call the SIGKILL cut short
        # (its client span never ended, so never reached the file); logistics served it anyway.
        assert [(s["service"], s["name"].rsplit("/", 1)[-1]) for s in orphans] == [("logistics", "Execute")], orphans
        # Nothing else of this saga landed in another trace.
        others = [s for s in _spans(trace_file) if s["attributes"].get("invsaga.saga_id") == saga_id]
        assert {s["trace_id"] for s in others} == {saga.trace_id}

        # Log lines about the saga carry its id, step and trace id, in the coordinator and participants.
        lines = []
        for log in Path(mesh.log_dir).glob("*.log"):
            for text in log.read_text(errors="replace").splitlines():
                if text.startswith("{") and saga_id in text:
                    lines.append(json.loads(text))
        tagged = [l for l in lines if l.get("saga_id") == saga_id]
        assert tagged, logs_tail(mesh)
        assert all(l.get("trace_id") == saga.trace_id for l in tagged), tagged
        assert any(l["service"] == "notify" and l.get("step") == "Notify" for l in tagged), tagged
    finally:
        await client.close()
        mesh.stop()


def _scrape(port: int) -> dict[str, list]:
    """samples by metric family name: [(sample name, labels, value)]"""
    body = httpx.get(f"http://127.0.0.1:{port + METRICS_PORT_OFFSET}/metrics", timeout=5).text
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(body):
        out[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return out


def _value(scraped: dict, family: str, sample: str | None = None, **labels: str) -> float:
    """Sum of the samples of ``family`` (``sample`` picks _count/_sum/_total...) matching ``labels``."""
    sample = sample or family
    total = 0.0
    for name, got, value in scraped.get(family, []):
        if name == sample and all(got.get(k) == v for k, v in labels.items()):
            total += value
    return total


async def test_metrics_of_every_process_after_completed_and_compensated_sagas(tmp_path):
    mesh = start_mesh(
        tmp_path,
        env={
            **FAST_RETRY,
            "INVSAGA_RESERVATION_SWEEP_INTERVAL": "200ms",
            # Only the first LockInventory is slowed: long enough to take its stock away meanwhile.
            "INVSAGA_FAULTS": "kind=latency,delay=1.5,method=Execute,step=LOCK_INVENTORY,times=1",
        },
    )
    client = MeshClient(mesh)
    try:
        await client.seed(
            [WH("WH-M1", priority=9), WH("WH-M2", priority=1)], [("WH-M1", "SKU-M1", 10), ("WH-M2", "SKU-M2", 5)]
        )

        # 1. Lock conflict: stock vanishes while the lock is in flight -> 3 refused locks, compensated.
        conflict = await client.start({"SKU-M1": 8})
        await _until_step_started(client, conflict, "LockInventory")
        await client.inventory.AdjustStock(
            inventory_pb2.AdjustStockRequest(warehouse_id="WH-M1", sku="SKU-M1", delta=-5, reason="damaged")
        )
        conflict_saga = await client.wait(conflict)
        assert conflict_saga.status == pb.SAGA_STATUS_COMPENSATED and conflict_saga.failure.reason == "LOCK_CONFLICT"
        # 2-3. Two completed sagas; 4. a shortage, compensated before anything needed undoing.
        expires = Timestamp()
        expires.FromNanoseconds(time.time_ns() + 3_000_000_000)
        done_1 = await client.run({"SKU-M1": 2}, expired_at=expires)  # its reservation expires in 3 s
        done_2 = await client.run({"SKU-M2": 3})
        short = await client.run({"SKU-M1": 100})
        assert [done_1.status, done_2.status] == [pb.SAGA_STATUS_COMPLETED] * 2
        assert short.status == pb.SAGA_STATUS_COMPENSATED and short.failure.reason == "INSUFFICIENT_INVENTORY"

        # The first completed saga's reservation expires 3 s later (the coordinator looks every
        # 0.2 s): its allocation is settled EXPIRED and the customer told, once.
        deadline = time.monotonic() + 15
        notify_ok = dict(grpc_service="NotifyStepService", grpc_method="Execute", grpc_code="OK")
        while (
            _value(
                _scrape(mesh.ports["allocation"]), "invsaga_expired_allocations", "invsaga_expired_allocations_total"
            )
            < 1
            or _value(
                _scrape(mesh.ports["notify"]),
                "invsaga_grpc_server_handled",
                "invsaga_grpc_server_handled_total",
                **notify_ok,
            )
            < 5
        ):
            assert time.monotonic() < deadline, "the reservation did not expire"
            await asyncio.sleep(0.3)

        scraped = {service: _scrape(mesh.ports[service]) for service in SERVICES}

        # Every process: gRPC requests by method and status code, counted and timed.
        for service in SERVICES:
            m = scraped[service]
            assert (
                _value(m, "invsaga_grpc_server_handled", "invsaga_grpc_server_handled_total", grpc_method="Check") >= 1
            )
            assert "invsaga_grpc_server_handling_seconds" in m, service
        c = scraped["coordinator"]
        assert (
            _value(
                c,
                "invsaga_grpc_server_handled",
                "invsaga_grpc_server_handled_total",
                grpc_service="SagaCoordinatorService",
                grpc_method="StartSaga",
                grpc_code="OK",
            )
            == 4
        )
        assert (
            _value(
                c,
                "invsaga_grpc_server_handling_seconds",
                "invsaga_grpc_server_handling_seconds_count",
                grpc_method="StartSaga",
                grpc_code="OK",
            )
            == 4
        )
        inv = scraped["inventory"]
        step_execute = dict(grpc_service="InventoryStepService", grpc_method="Execute")
        assert (
            _value(
                inv,
                "invsaga_grpc_server_handled",
                "invsaga_grpc_server_handled_total",
                grpc_code="ABORTED",
                **step_execute,
            )
            == 3
        )
        assert (
            _value(
                inv, "invsaga_grpc_server_handled", "invsaga_grpc_server_handled_total", grpc_code="OK", **step_execute
            )
            == 4 + 2
        )  # 4 checks, 2 locks
        assert (
            _value(
                scraped["warehouse"],
                "invsaga_grpc_server_handled",
                "invsaga_grpc_server_handled_total",
                grpc_method="Execute",
                grpc_code="OK",
            )
            == 4
        )
        assert (
            _value(
                scraped["logistics"],
                "invsaga_grpc_server_handled",
                "invsaga_grpc_server_handled_total",
                grpc_method="Execute",
                grpc_code="OK",
            )
            == 2
        )
        # Two confirmations, two "reservation failed" notices, one "reservation expired".
        assert (
            _value(
                scraped["notify"],
                "invsaga_grpc_server_handled",
                "invsaga_grpc_server_handled_total",
                grpc_service="NotifyStepService",
                grpc_method="Execute",
                grpc_code="OK",
            )
            == 5
        )

        # Coordinator: sagas by outcome, steps, retries, compensations, in flight, oldest.
        assert _value(c, "invsaga_sagas_started", "invsaga_sagas_started_total") == 4
        finished = "invsaga_sagas_finished_total"
        assert _value(c, "invsaga_sagas_finished", finished, outcome="completed") == 2
        assert _value(c, "invsaga_sagas_finished", finished, outcome="compensated", reason="LOCK_CONFLICT") == 1
        assert (
            _value(c, "invsaga_sagas_finished", finished, outcome="compensated", reason="INSUFFICIENT_INVENTORY") == 1
        )
        assert _value(c, "invsaga_sagas_finished", finished, outcome="failed") == 0
        assert _value(c, "invsaga_saga_duration_seconds", "invsaga_saga_duration_seconds_count") == 4
        steps = "invsaga_step_duration_seconds_count"
        assert _value(c, "invsaga_step_duration_seconds", steps, step="QueryWarehouses", outcome="succeeded") == 4
        assert _value(c, "invsaga_step_duration_seconds", steps, step="CheckAvailability", outcome="succeeded") == 3
        assert _value(c, "invsaga_step_duration_seconds", steps, step="CheckAvailability", outcome="failed") == 1
        assert _value(c, "invsaga_step_duration_seconds", steps, step="LockInventory", outcome="succeeded") == 2
        assert _value(c, "invsaga_step_duration_seconds", steps, step="LockInventory", outcome="failed") == 1
        assert _value(c, "invsaga_step_duration_seconds", steps, step="Notify", outcome="succeeded") == 2
        # The slowed lock took ≥ 1.5 s: it is in the histogram's upper buckets.
        lock_sum = _value(
            c,
            "invsaga_step_duration_seconds",
            "invsaga_step_duration_seconds_sum",
            step="LockInventory",
            outcome="failed",
        )
        assert lock_sum >= 1.5
        assert (
            _value(c, "invsaga_step_retries", "invsaga_step_retries_total", step="LockInventory", code="ABORTED") == 2
        )
        assert _value(c, "invsaga_step_retries", "invsaga_step_retries_total") == 2
        assert _value(c, "invsaga_compensations", "invsaga_compensations_total", step="AllocateInventory") == 1
        assert _value(c, "invsaga_compensations", "invsaga_compensations_total") == 1
        assert _value(c, "invsaga_sagas_in_flight") == 0
        assert _value(c, "invsaga_oldest_running_saga_age_seconds") == 0

        # The seed's four: allocation duration, lock failures, utilisation, expired allocations.
        alloc = scraped["allocation"]
        assert (
            _value(
                alloc,
                "invsaga_allocation_duration_seconds",
                "invsaga_allocation_duration_seconds_count",
                strategy="PRIORITY",
                outcome="allocated",
            )
            == 3
        )
        assert _value(alloc, "invsaga_expired_allocations", "invsaga_expired_allocations_total") == 1
        assert _value(inv, "invsaga_lock_failures", "invsaga_lock_failures_total", warehouse="WH-M1") == 3
        assert _value(inv, "invsaga_lock_failures", "invsaga_lock_failures_total") == 3
        # WH-M1: 5 on hand, none locked (its reservation expired); WH-M2: 5 on hand, 3 locked.
        assert _value(inv, "invsaga_inventory_utilisation_ratio", warehouse="WH-M1") == 0.0
        assert _value(inv, "invsaga_inventory_utilisation_ratio", warehouse="WH-M2") == 0.6
        assert _value(inv, "invsaga_inventory_locked_units", warehouse="WH-M2") == 3
        assert _value(inv, "invsaga_inventory_on_hand_units", warehouse="WH-M1") == 5

        # `invsaga top` reads the same numbers from the coordinator's /metrics.
        shown = subprocess.run(
            [
                sys.executable,
                "-m",
                "invsaga.cli",
                "top",
                "--once",
                "--interval",
                "0.2",
                "--coordinator",
                mesh.address("coordinator"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "COLUMNS": "120"},
        )
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"started\s*│\s*4\b", shown.stdout), shown.stdout
        assert re.search(r"completed\s*│\s*2 \(50%\)", shown.stdout), shown.stdout
        assert re.search(r"compensated\s*│\s*2 \(50%\)", shown.stdout), shown.stdout
        assert re.search(r"LOCK_CONFLICT\s*│\s*1\b", shown.stdout), shown.stdout

        # No saga id anywhere in a label.
        for service, m in scraped.items():
            for samples in m.values():
                for _, labels, _ in samples:
                    assert not any(
                        v in (conflict, done_1.saga_id, done_2.saga_id, short.saga_id) for v in labels.values()
                    )
    finally:
        await client.close()
        mesh.stop()
