"""Telemetry pieces in one process: exporter choice, the metrics interceptor, log context,
trace context per saga, the JSON-lines span file, and the coordinator's metric hooks."""

from __future__ import annotations

import io
import json
import logging
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from prometheus_client import REGISTRY

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2
from invsaga.runtime import telemetry
from invsaga.runtime.errors import Aborted
from invsaga.runtime.logs import JsonFormatter, _trace_id
from invsaga.runtime.metrics import SagaMetrics
from invsaga.runtime.server import DomainErrorInterceptor


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, []),
        ({"INVSAGA_TRACE_FILE": "/tmp/spans.jsonl"}, ["file"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true", "INVSAGA_TRACE_FILE": "x"}, []),
    ],
)
def test_exporters_from_env(env, expected):
    assert telemetry.exporters_from_env(env) == expected


def test_step_names_match_the_coordinators():
    assert telemetry.step_name(common_pb2.SAGA_STEP_LOCK_INVENTORY) == "LockInventory"
    assert telemetry.step_name(common_pb2.SAGA_STEP_NOTIFY_FAILURE) == "NotifyFailure"
    assert telemetry.step_name(999) == "999"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_interceptor_counts_by_code_and_tags_step_logs():
    records = io.StringIO()
    handler = logging.StreamHandler(records)
    handler.setFormatter(JsonFormatter("inventory"))
    logger = logging.getLogger("test.step")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    async def execute(request, context):
        logger.info("locking")
        if request.lock_inventory.order_id == "conflict":
            raise Aborted("no stock", reason="LOCK_CONFLICT")
        return inventory_pb2.ExecuteResponse()

    generic = grpc.method_handlers_generic_handler(
        "invsaga.inventory.v1.InventoryStepService",
        {
            "Execute": grpc.unary_unary_rpc_method_handler(
                execute,
                request_deserializer=inventory_pb2.ExecuteRequest.FromString,
                response_serializer=inventory_pb2.ExecuteResponse.SerializeToString,
            )
        },
    )
    server = grpc.aio.server(interceptors=[telemetry.MetricsInterceptor(), DomainErrorInterceptor()])
    server.add_generic_rpc_handlers([generic])
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    labels = dict(grpc_service="InventoryStepService", grpc_method="Execute")
    ok_before = _sample("invsaga_grpc_server_handled_total", grpc_code="OK", **labels)
    aborted_before = _sample("invsaga_grpc_server_handled_total", grpc_code="ABORTED", **labels)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                "/invsaga.inventory.v1.InventoryStepService/Execute",
                request_serializer=inventory_pb2.ExecuteRequest.SerializeToString,
                response_deserializer=inventory_pb2.ExecuteResponse.FromString,
            )
            ctx = common_pb2.StepContext(saga_id="saga-1", step=common_pb2.SAGA_STEP_LOCK_INVENTORY)
            await call(inventory_pb2.ExecuteRequest(context=ctx, lock_inventory=inventory_pb2.LockInventoryInput()))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(
                    inventory_pb2.ExecuteRequest(
                        context=ctx, lock_inventory=inventory_pb2.LockInventoryInput(order_id="conflict")
                    )
                )
            assert err.value.code() == grpc.StatusCode.ABORTED
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="missing"))
    finally:
        await server.stop(0)
        logger.removeHandler(handler)
    assert _sample("invsaga_grpc_server_handled_total", grpc_code="OK", **labels) == ok_before + 1
    assert _sample("invsaga_grpc_server_handled_total", grpc_code="ABORTED", **labels) == aborted_before + 1
    assert _sample("invsaga_grpc_server_handling_seconds_count", grpc_code="ABORTED", **labels) >= 1
    assert (
        _sample("invsaga_grpc_server_handled_total", grpc_service="Health", grpc_method="Check", grpc_code="NOT_FOUND")
        >= 1
    )
    lines = [json.loads(line) for line in records.getvalue().splitlines()]
    assert len(lines) == 2
    assert all(l["saga_id"] == "saga-1" and l["step"] == "LockInventory" for l in lines)


def test_saga_trace_context_without_tracing_still_correlates_logs():
    trace_id, traceparent = telemetry.saga_trace_context()
    assert len(trace_id) == 32 and traceparent.startswith(f"00-{trace_id}-") and traceparent.endswith("-00")
    assert _trace_id() == ""
    with telemetry.saga_trace(traceparent):
        assert _trace_id() == trace_id
    assert _trace_id() == ""
    with telemetry.saga_trace(""):  # sagas created before tracing existed
        assert _trace_id() == ""
    assert telemetry.saga_trace_context()[0] != trace_id


def test_json_lines_exporter_writes_one_span_per_line(tmp_path):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    path = tmp_path / "{service}.jsonl"
    provider = TracerProvider(resource=Resource.create({"service.name": "warehouse", "process.pid": 42}))
    provider.add_span_processor(SimpleSpanProcessor(telemetry.JsonLinesSpanExporter(str(path), "warehouse")))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("outer") as outer:
        with tracer.start_as_current_span("inner", attributes={"invsaga.step": "QueryWarehouses"}):
            pass
    provider.shutdown()
    spans = [json.loads(line) for line in (tmp_path / "warehouse.jsonl").read_text().splitlines()]
    assert [s["name"] for s in spans] == ["inner", "outer"]
    inner, outer_span = spans
    assert inner["trace_id"] == outer_span["trace_id"] == format(outer.get_span_context().trace_id, "032x")
    assert inner["parent_id"] == outer_span["span_id"] and outer_span["parent_id"] == ""
    assert inner["service"] == "warehouse" and inner["pid"] == 42
    assert inner["attributes"] == {"invsaga.step": "QueryWarehouses"}


def test_saga_metrics_hooks():
    queued = {"a", "b", "c"}
    m = SagaMetrics(in_flight=lambda: len(queued))
    saga = pb.Saga(saga_id="s", status=pb.SAGA_STATUS_COMPENSATED, failure=pb.SagaFailure(reason="LOCK_CONFLICT"))
    saga.created_at.FromSeconds(int(time.time()) - 2)
    before = _sample("invsaga_sagas_finished_total", outcome="compensated", reason="LOCK_CONFLICT")
    m.finished(saga)
    assert _sample("invsaga_sagas_finished_total", outcome="compensated", reason="LOCK_CONFLICT") == before + 1
    assert _sample("invsaga_saga_duration_seconds_sum", outcome="compensated") >= 2
    failed = pb.Saga(status=pb.SAGA_STATUS_FAILED, compensation_failure=pb.SagaFailure(reason="COMPENSATION_FAILED"))
    m.finished(failed)
    assert _sample("invsaga_sagas_finished_total", outcome="failed", reason="COMPENSATION_FAILED") >= 1

    m.step("LockInventory", "failed", 0.2)
    m.retry("LockInventory", "ABORTED")
    m.compensation("AllocateInventory")
    assert _sample("invsaga_step_duration_seconds_count", step="LockInventory", outcome="failed") >= 1
    assert _sample("invsaga_step_retries_total", step="LockInventory", code="ABORTED") >= 1
    assert _sample("invsaga_compensations_total", step="AllocateInventory") >= 1

    assert _sample("invsaga_sagas_in_flight") == 3
    assert _sample("invsaga_oldest_running_saga_age_seconds") == 0
    m.driving("old", time.time() - 30)
    m.driving("new", time.time() - 1)
    assert 29 <= _sample("invsaga_oldest_running_saga_age_seconds") < 40
    m.done("old")
    m.done("new")
    assert _sample("invsaga_oldest_running_saga_age_seconds") == 0
