"""The one server bootstrap all six processes use.

``run_process(name, build)`` parses ``--port``/``--database-url``/``--config``, loads the
settings once, and serves a ``grpc.aio`` server with the health service (SERVING once ready,
NOT_SERVING as soon as SIGTERM arrives), reflection for every service it serves, the domain
error mapping, and a graceful shutdown bounded by the grace period.
"""

from __future__ import annotations

import argparse
import dataclasses
import asyncio
import contextlib
import gc
import inspect
import logging
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from invsaga.runtime import security, telemetry
from invsaga.runtime.batch import install_execute_batch, layered_execute
from invsaga.runtime.config import ConfigError, Settings, load_settings
from invsaga.runtime.errors import DomainError, InvalidArgument
from invsaga.runtime.faults import FaultInjector, parse_faults
from invsaga.runtime.interceptors import WrappingInterceptor
from invsaga.runtime.logs import configure_logging
from invsaga.runtime.stream import install_execute_stream

log = logging.getLogger("invsaga.server")

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass
class Registration:
    """One gRPC service a process serves."""

    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    full_name: str


@dataclass
class App:
    """What a process's ``build`` returns: its services, background loops and cleanup."""

    services: list[Registration]
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def registration(servicer: Any, module: Any, service: str) -> Registration:
    """Register ``servicer`` for ``service`` (e.g. "InventoryService") of a generated ``*_pb2_grpc`` module."""
    add = getattr(module, f"add_{service}Servicer_to_server")
    package = sys.modules[module.__name__.removesuffix("_grpc")].DESCRIPTOR.package
    return Registration(servicer, add, f"{package}.{service}")


class _Undecodable:
    """What a request that is not a valid serialized message deserializes to."""

    __slots__ = ("message_name",)

    def __init__(self, message_name: str) -> None:
        self.message_name = message_name


def _tolerant(deserializer):
    """Malformed bytes become INVALID_ARGUMENT (gRPC's own answer would be INTERNAL)."""
    if deserializer is None:
        return None
    message_type = getattr(deserializer, "__self__", None)
    name = getattr(getattr(message_type, "DESCRIPTOR", None), "full_name", "message")

    def deserialize(data):
        try:
            return deserializer(data)
        except Exception:  # protobuf's DecodeError and friends
            return _Undecodable(name)

    return deserialize


def _malformed(request: _Undecodable) -> grpc.Status:
    return InvalidArgument(
        f"malformed request: not a serialized {request.message_name}",
        violations=[("", f"the request bytes do not decode as {request.message_name}")],
    ).to_status()


def _wrap_unary(behavior):
    async def wrapped(request, context):
        if isinstance(request, _Undecodable):
            await context.abort_with_status(_malformed(request))
        # A caller that gives up (deadline, cancel) must not cancel a handler halfway through
        # its transaction: that would leave its pooled connection mid-transaction. The
        # handler finishes and only its reply is dropped; the barrier makes the retry safe.
        task = asyncio.ensure_future(behavior(request, context))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await task
            raise
        except DomainError as err:
            await context.abort_with_status(err.to_status())

    return wrapped


def _wrap_stream(behavior):
    async def wrapped(request, context):
        if isinstance(request, _Undecodable):
            await context.abort_with_status(_malformed(request))
        try:
            async for item in behavior(request, context):
                yield item
        except DomainError as err:
            await context.abort_with_status(err.to_status())

    return wrapped


class DomainErrorInterceptor(WrappingInterceptor):
    """Turns a ``DomainError`` raised by any servicer into its rich ``google.rpc.Status``.

    The innermost interceptor, so what it wraps is the method's registered handler.
    """

    def wrap(self, method: str, handler):
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_concurrent_streams", 4096),
        # New pods get traffic: clients reconnect (and re-resolve) at least this often.
        ("grpc.max_connection_age_ms", int(settings.max_connection_age * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.grace_period * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.so_reuseport", 0),
    ]


def tune_gc() -> None:
    """Keep the collector off the hot path once the process is up.

    Everything built at startup (modules, descriptors, pools) lives as long as the process, so
    it is frozen out of collection; and a call allocates hundreds of short-lived objects, so
    the youngest generation is collected every 50,000 allocations rather than every 700.
    Reference cycles are still collected, only less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


class PortInUse(RuntimeError):
    pass


async def serve(settings: Settings, build: Callable[[Settings], Awaitable[App]]) -> int:
    """Serve until SIGTERM/SIGINT; return the exit status."""
    telemetry.setup(settings)
    app = await build(settings)
    try:
        return await _serve_app(settings, app)
    finally:
        # Also when serving failed to start (a port in use): an open pool would keep the loop alive.
        for hook in app.on_stop:
            with contextlib.suppress(Exception):
                await hook()
        telemetry.shutdown()


async def _serve_app(settings: Settings, app: App) -> int:
    interceptors = [*telemetry.server_interceptors(settings), *security.server_interceptors(settings)]
    if settings.fault_injection:
        interceptors.append(FaultInjector(parse_faults(settings.fault_injection)))
        log.warning("fault injection is ON: %s", settings.fault_injection)
    interceptors.append(DomainErrorInterceptor())
    server = grpc.aio.server(
        interceptors=interceptors,
        options=server_options(settings),
        maximum_concurrent_rpcs=None,
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [r.full_name for r in app.services]
    # Each request of an ExecuteBatch or ExecuteStream passes the per-call layers an Execute of its own would.
    layers = [i for i in interceptors if isinstance(i, WrappingInterceptor)]
    for reg in app.services:
        execute = layered_execute(reg.servicer, reg.full_name, layers)
        if execute is not None:
            install_execute_batch(reg.servicer, reg.full_name, execute)
            install_execute_stream(reg.servicer, reg.full_name, execute)
        reg.add_to_server(reg.servicer, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    address = f"{settings.host}:{settings.port}"
    credentials = security.server_credentials(settings)
    try:
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise PortInUse(f"port {settings.port} is already in use (wanted by {settings.service})")
    probe_server = None
    if settings.health_port:
        # Kubernetes' native gRPC probes cannot speak TLS: health alone, in plaintext, on its own port.
        probe_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health, probe_server)
        if not probe_server.add_insecure_port(f"{settings.host}:{settings.health_port}"):
            raise PortInUse(f"port {settings.health_port} is already in use (health of {settings.service})")
        await probe_server.start()
    await server.start()
    telemetry.start_metrics_server(settings)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    tasks = [asyncio.create_task(loop_fn(), name=getattr(loop_fn, "__name__", "background")) for loop_fn in app.background]
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    tune_gc()
    log.info("serving %s on %s", settings.service, address, extra={"port": settings.port})
    print(f"{settings.service} listening on {address}", flush=True)

    await stop.wait()
    log.info("shutting down %s (grace %.1fs)", settings.service, settings.grace_period)
    await health.enter_graceful_shutdown()
    for task in tasks:
        task.cancel()
    await server.stop(settings.grace_period)
    if probe_server is not None:
        await probe_server.stop(0)
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    return 0


def parse_args(service: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {service}", description=f"invsaga {service} process")
    parser.add_argument("--port", type=int, help="gRPC port (env INVSAGA_PORT)")
    parser.add_argument(
        "--database-url",
        help="postgresql+psycopg://... (env INVSAGA_DATABASE_URL); none: an embedded server under the data directory",
    )
    parser.add_argument("--config", help="YAML configuration file (env INVSAGA_CONFIG)")
    return parser.parse_args(argv)


def run_process(service: str, build: Callable[[Settings], Awaitable[App]], argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m <process>``."""
    args = parse_args(service, argv)
    try:
        settings = load_settings(service, port=args.port, database_url=args.database_url, config_path=args.config)
    except ConfigError as err:
        print(f"{service}: configuration error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(service, settings.log_level, settings.log_format)
    embedded = None
    if not settings.database_url:
        from invsaga.runtime.embedded import embedded_url

        url, embedded = embedded_url(settings.data_dir)
        settings = dataclasses.replace(settings, database_url=url)
    try:
        code = asyncio_run(serve(settings, build))
    except PortInUse as err:
        print(f"{service}: {err}", file=sys.stderr)
        raise SystemExit(3) from None
    finally:
        if embedded is not None:
            embedded.stop()
    raise SystemExit(code)


def asyncio_run(coro: Awaitable[int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)
