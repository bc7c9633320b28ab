"""Tracing, metrics and log context for the server bootstrap, the client channels and the saga driver.

Tracing is off unless configured, and then costs nothing: no OpenTelemetry interceptor is
installed. It is on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``;
comma-separated), when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set with no exporter named, or when
``INVSAGA_TRACE_FILE`` names a file of JSON-lines spans (local use and tests).
``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true`` turn it off.

One trace per saga: StartSaga records the W3C ``traceparent`` of its server span in the saga
row; the driver re-attaches it whenever it drives the saga (on any replica, after any
restart), so every step's client and server spans join that trace. With tracing off the
coordinator still mints a (non-sampled) trace id per saga, so its log lines and
``Saga.trace_id`` correlate all the same.

The metrics interceptor is always installed: a counter and a histogram per RPC by method and
status code, and, on ``Execute``/``Compensate``, the saga id and step as log context.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import secrets
import time
from typing import TYPE_CHECKING, Any, Iterator, Sequence, cast

import grpc

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

from invsaga.runtime import metrics
from invsaga.runtime.config import Settings
from invsaga.runtime.interceptors import WrappingInterceptor, codec
from invsaga.runtime.logs import log_context

log = logging.getLogger("invsaga.telemetry")

TRACE_FILE_ENV = "INVSAGA_TRACE_FILE"
STEP_METHODS = ("Execute", "Compensate")

_provider: Any = None  # the SDK TracerProvider while tracing is on
_tracer: Any = None
_metrics_server: Any = None


# -- configuration ----------------------------------------------------------------------------
def exporters_from_env(env: dict[str, str] | os._Environ | None = None) -> list[str]:
    """The span exporters the environment asks for: a subset of otlp, console, file."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not named and (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        named = ["otlp"]
    chosen = [n for n in named if n in ("otlp", "console")]
    for name in named:
        if name not in ("otlp", "console", "none"):
            log.warning("OTEL_TRACES_EXPORTER: unsupported exporter %r ignored", name)
    if env.get(TRACE_FILE_ENV):
        chosen.append("file")
    return list(dict.fromkeys(chosen))


def tracing_enabled() -> bool:
    return _provider is not None


class JsonLinesSpanExporter:
    """Appends one JSON object per finished span to a file; several processes may share it.

    Each span is a single ``write`` on an ``O_APPEND`` descriptor, so lines from different
    processes do not interleave. ``{service}`` in the path is replaced by the service name.
    """

    def __init__(self, path: str, service: str) -> None:
        self.path = path.replace("{service}", service)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = []
        for span in spans:
            ctx = span.get_span_context()
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "service": span.resource.attributes.get("service.name", ""),
                        "pid": span.resource.attributes.get("process.pid", 0),
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": format(ctx.trace_id, "032x"),
                        "span_id": format(ctx.span_id, "016x"),
                        "parent_id": format(parent.span_id, "016x") if parent else "",
                        "start": span.start_time,
                        "end": span.end_time,
                        "status": span.status.status_code.name,
                        "attributes": dict(span.attributes or {}),
                    },
                    default=str,
                )
            )
        for line in lines:
            os.write(self.fd, (line + "\n").encode())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def setup(settings: Settings) -> None:
    """Configure tracing for this process from the environment (see the module docstring)."""
    global _provider, _tracer
    chosen = exporters_from_env()
    if not chosen:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are merged in by Resource.create.
    attributes: dict[str, str | int] = {
        "service.name": os.environ.get("OTEL_SERVICE_NAME") or settings.service,
        "process.pid": os.getpid(),
    }
    provider = TracerProvider(resource=Resource.create(attributes))
    if "otlp" in chosen:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if "console" in chosen:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if "file" in chosen:
        # Written as each span ends: a SIGKILLed process loses none of what it already did.
        # A SpanExporter by its methods, not its base class: the SDK is imported only once tracing is on.
        exporter = cast("SpanExporter", JsonLinesSpanExporter(os.environ[TRACE_FILE_ENV], settings.service))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("invsaga")
    log.info("tracing on: %s", ", ".join(chosen))


def shutdown() -> None:
    """Flush exporters and stop the /metrics server."""
    global _metrics_server
    if _provider is not None:
        with contextlib.suppress(Exception):
            _provider.shutdown()
    if _metrics_server is not None:
        with contextlib.suppress(Exception):
            _metrics_server.shutdown()
        _metrics_server = None


# -- interceptors -------------------------------------------------------------------------------
def server_interceptors(settings: Settings) -> list[Any]:
    """Metrics and step log context always; OpenTelemetry's server spans when tracing is on."""
    interceptors: list[Any] = [MetricsInterceptor()]
    if _provider is not None:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        interceptors.append(aio_server_interceptor(tracer_provider=_provider))
    return interceptors


def client_interceptors() -> list[Any]:
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return aio_client_interceptors(tracer_provider=_provider)


def step_name(step_value: int) -> str:
    """``SAGA_STEP_LOCK_INVENTORY`` (as a number) -> ``LockInventory``, the coordinator's name."""
    from invsaga.common.v1 import common_pb2

    try:
        enum = common_pb2.SagaStep.Name(step_value)
    except ValueError:
        return str(step_value)
    return "".join(part.capitalize() for part in enum.removeprefix("SAGA_STEP_").split("_"))


class _Child:
    """The two instruments of one (service, method, code), looked up once."""

    __slots__ = ("count", "seconds")

    def __init__(self, service: str, method: str, code: str) -> None:
        self.count = metrics.GRPC_HANDLED.labels(service, method, code)
        self.seconds = metrics.GRPC_HANDLING_SECONDS.labels(service, method, code)


class MetricsInterceptor(WrappingInterceptor):
    """Counts and times every unary and server-streaming RPC by method and status code.

    On the participants' ``Execute``/``Compensate`` it also puts the request's saga id and step
    into the log context, so every line the step logs carries them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._children: dict[tuple[str, str, str], _Child] = {}

    def child(self, service: str, method: str, code: str) -> _Child:
        key = (service, method, code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = _Child(service, method, code)
        return child

    def wrap(self, full_method: str, handler):
        if handler.request_streaming:
            return handler
        service, _, method = full_method.lstrip("/").rpartition("/")
        service = service.rsplit(".", 1)[-1]
        step_call = method in STEP_METHODS

        if handler.unary_unary:
            behavior = handler.unary_unary

            async def unary(request, context):
                with _Observed(self, service, method, context):
                    ctx = getattr(request, "context", None) if step_call else None
                    if ctx is not None and ctx.saga_id:
                        with log_context(saga_id=ctx.saga_id, step=step_name(ctx.step)):
                            return await behavior(request, context)
                    return await behavior(request, context)

            return grpc.unary_unary_rpc_method_handler(unary, **codec(handler))
        if handler.unary_stream and inspect.isasyncgenfunction(handler.unary_stream):
            stream_behavior = handler.unary_stream

            async def stream(request, context):
                with _Observed(self, service, method, context):
                    async for item in stream_behavior(request, context):
                        yield item

            return grpc.unary_stream_rpc_method_handler(stream, **codec(handler))
        return handler


class _Observed:
    """Times one RPC and records it under the status code it ended with."""

    __slots__ = ("interceptor", "service", "method", "context", "started")

    def __init__(self, interceptor: MetricsInterceptor, service: str, method: str, context) -> None:
        self.interceptor = interceptor
        self.service = service
        self.method = method
        self.context = context

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, exc_type, exc, tb) -> None:
        child = self.interceptor.child(self.service, self.method, status_code_name(self.context.code(), exc))
        child.count.inc()
        child.seconds.observe(time.perf_counter() - self.started)


def status_code_name(code: Any, error: BaseException | None) -> str:
    """The RPC's final code: the one the servicer set or aborted with, else from how it ended."""
    if code is None:
        if error is None:
            return "OK"
        return "CANCELLED" if isinstance(error, asyncio.CancelledError) else "UNKNOWN"
    if isinstance(code, int):  # grpc.aio may report the code as its integer value
        return _CODE_NAMES.get(code, str(code))
    return code.name


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


# -- one trace per saga ---------------------------------------------------------------------------
def saga_trace_context() -> tuple[str, str]:
    """(trace id, W3C traceparent) for a new saga: the current span's when tracing, else fresh."""
    traceparent = current_traceparent()
    if traceparent:
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            return format(ctx.trace_id, "032x"), traceparent
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-00"


@contextlib.contextmanager
def saga_trace(traceparent: str) -> Iterator[None]:
    """Make the saga's stored trace context current while driving it."""
    if not traceparent:
        yield
        return
    from opentelemetry import context as otel_context
    from opentelemetry.propagate import extract

    token = otel_context.attach(extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        otel_context.detach(token)


def current_traceparent() -> str:
    """The current span's W3C traceparent ("" when tracing is off or no span is current)."""
    if _provider is None:
        return ""
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent", "")


def request_span(method: str, traceparent: str):
    """The server span of one request that carries its caller's trace context (a no-op when
    tracing is off or the request carries none)."""
    if _tracer is None or not traceparent:
        return contextlib.nullcontext()
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    return _tracer.start_as_current_span(method, context=extract({"traceparent": traceparent}), kind=SpanKind.SERVER)


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """No trace context while inside: a long-lived call opened here (a step stream) belongs to
    no saga's trace; each request on it carries its own (``request_span``)."""
    if _provider is None:
        yield
        return
    from opentelemetry import context as otel_context

    token = otel_context.attach(otel_context.Context())
    try:
        yield
    finally:
        otel_context.detach(token)


def step_span(name: str, saga_id: str, step: str):
    """A span around one step's call (its retries included); a no-op when tracing is off."""
    if _tracer is None:
        return contextlib.nullcontext()
    return _tracer.start_as_current_span(name, attributes={"invsaga.saga_id": saga_id, "invsaga.step": step})


# -- /metrics -----------------------------------------------------------------------------------
def start_metrics_server(settings: Settings) -> None:
    """Serve Prometheus /metrics on settings.metrics_port (a busy port is logged, not fatal)."""
    global _metrics_server
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(settings.metrics_port, addr=settings.host)
    except OSError as err:
        log.error("metrics port %d unavailable: %s; /metrics is not served", settings.metrics_port, err)
        return
    _metrics_server = server
