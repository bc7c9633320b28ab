"""The one server bootstrap all six processes use.

``run_process(name, build)`` parses ``--port``/``--database-url``/``--config``, loads the
settings once, and serves a ``grpc.aio`` server with the health service (SERVING once ready,
NOT_SERVING as soon as SIGTERM arrives), reflection for every service it serves, the one
mapping of errors to statuses (``DomainErrorInterceptor``: a ``DomainError`` as it is, the rest
through ``errors.as_domain_error``), the checks every request passes before its servicer
(``RequestGuard``: size per RPC, the in-flight byte budget, NUL characters, Timestamps and
Structs), and a graceful shutdown bounded by the grace period.
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
from typing import Any, Awaitable, Callable, Coroutine, Sequence

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from invsaga.runtime import inputs, security, telemetry
from invsaga.runtime.batch import layered_execute
from invsaga.runtime.config import ConfigError, Settings, load_settings
from invsaga.runtime.errors import DomainError, InvalidArgument, error_status, invalid_request
from invsaga.runtime.faults import FaultInjector, parse_faults
from invsaga.runtime.interceptors import Refusal, WrappingInterceptor
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
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def registration(servicer: Any, module: Any, service: str) -> Registration:
    """Register ``servicer`` for ``service`` (e.g. "InventoryService") of a generated ``*_pb2_grpc`` module."""
    add = getattr(module, f"add_{service}Servicer_to_server")
    package = sys.modules[module.__name__.removesuffix("_grpc")].DESCRIPTOR.package
    return Registration(servicer, add, f"{package}.{service}")


class _Refused:
    """What a request refused before its handler runs deserializes to: malformed bytes, too
    large, over the in-flight budget, or content no request may hold. The handler's wrapper
    answers with ``status`` (after the outer layers, authentication first, have run)."""

    __slots__ = ("status",)

    def __init__(self, error: DomainError) -> None:
        self.status = error.to_status()


def _malformed(message_name: str) -> DomainError:
    return InvalidArgument(
        f"malformed request: not a serialized {message_name}",
        violations=[("", f"the request bytes do not decode as {message_name}")],
    )


class RequestGuard:
    """The checks every request passes before its servicer sees it (``invsaga.runtime.inputs``):
    its size against the RPC's limit and the server's in-flight budget (on the raw bytes,
    before decoding), then its content (NUL characters, Timestamps, Structs)."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings(service="coordinator", port=0)
        self.sizes = inputs.SizeLimits(
            start_saga=settings.max_start_saga_bytes,
            request=settings.max_request_bytes,
            step_request=settings.max_step_request_bytes,
        )
        self.budget = inputs.RequestBudget(settings.max_inflight_request_bytes)
        self.content = inputs.ContentChecker(settings.max_metadata_bytes, settings.max_metadata_depth)

    def deserializer(self, method: str, deserializer, *, per_message: bool = False):
        """``deserializer`` behind the checks; what it returns for a refused request is a ``_Refused``.

        ``per_message``: a message of ExecuteStream, whose budget is taken per message by the
        stream itself (one over it is answered RESOURCE_EXHAUSTED; the stream goes on).
        """
        if deserializer is None:
            return None
        message_type = getattr(deserializer, "__self__", None)
        name = getattr(getattr(message_type, "DESCRIPTOR", None), "full_name", "message")
        limit = self.sizes.for_method(method)
        budget = self.budget
        content = None if inputs.split_method(method)[1] in inputs.ENVELOPE_METHODS else self.content

        def deserialize(data):
            size = len(data)
            if size > limit:
                return _Refused(inputs.too_large(method, size, limit))
            if not per_message and not budget.fits(size):
                return _Refused(inputs.server_busy(budget.limit))
            try:
                message = deserializer(data)
            except Exception:  # protobuf's DecodeError and friends: INVALID_ARGUMENT, not gRPC's INTERNAL
                return _Refused(_malformed(name))
            if content is not None:
                found = content.violations(message, b"\x00" in data)
                if found:
                    return _Refused(invalid_request(found))
            budget.note(message, size)
            return message

        return deserialize


def _wrap_unary(behavior, method: str, guard: RequestGuard, decoded_here: bool):
    budget = guard.budget
    content = guard.content

    async def wrapped(request, context):
        if isinstance(request, _Refused):
            await context.abort_with_status(request.status)
        if not decoded_here:
            # A request of an ExecuteStream message (its envelope was decoded, not checked).
            found = content.violations(request, b"\x00" in request.SerializeToString())
            if found:
                await context.abort_with_status(invalid_request(found).to_status())
        size = budget.take(request)
        if size is None:
            await context.abort_with_status(inputs.server_busy(budget.limit).to_status())
        try:
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
            except grpc.aio.AbortError:  # the servicer aborted with its own status
                raise
            except Exception as err:  # noqa: BLE001 - the one mapping of errors to statuses
                await context.abort_with_status(error_status(err, method))
        finally:
            budget.give_back(size)

    return wrapped


def _wrap_stream(behavior, method: str, guard: RequestGuard):
    budget = guard.budget

    async def wrapped(request, context):
        if isinstance(request, _Refused):
            await context.abort_with_status(request.status)
        size = budget.take(request)
        if size is None:
            await context.abort_with_status(inputs.server_busy(budget.limit).to_status())
        try:
            async for item in behavior(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as err:  # noqa: BLE001
            await context.abort_with_status(error_status(err, method))
        finally:
            budget.give_back(size)

    return wrapped


def _wrap_bidi(behavior, method: str):
    """ExecuteStream: a refused message ends the stream with its status; so does an error of
    the stream itself (each request's own error is answered in its result)."""

    async def checked(request_iterator):
        async for message in request_iterator:
            if isinstance(message, _Refused):
                raise Refusal(message.status)
            yield message

    async def wrapped(request_iterator, context):
        try:
            async for item in behavior(checked(request_iterator), context):
                yield item
        except Refusal as refused:
            await context.abort_with_status(refused.status)
        except grpc.aio.AbortError:
            raise
        except Exception as err:  # noqa: BLE001
            await context.abort_with_status(error_status(err, method))

    return wrapped


class DomainErrorInterceptor(WrappingInterceptor):
    """The one mapping of what a servicer raises to the status its caller gets, and the checks
    every request passes first (``RequestGuard``).

    A ``DomainError`` becomes its rich ``google.rpc.Status``; anything else goes through
    ``errors.as_domain_error`` (UNAVAILABLE, INVALID_ARGUMENT or INTERNAL with an error id).
    The innermost interceptor, so what it wraps is the method's registered handler. The
    requests of an ``ExecuteStream`` message each pass it as an ``Execute`` would.
    """

    def __init__(self, guard: RequestGuard | None = None) -> None:
        super().__init__()
        self.guard = guard or RequestGuard()

    def wrap(self, method: str, handler):
        guard = self.guard
        kwargs = dict(
            # A message of ExecuteStream (stream_stream) takes its budget per message.
            request_deserializer=guard.deserializer(
                method, handler.request_deserializer, per_message=handler.stream_stream is not None
            ),
            response_serializer=handler.response_serializer,
        )
        if handler.unary_unary:
            unary = _wrap_unary(handler.unary_unary, method, guard, handler.request_deserializer is not None)
            return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
        if handler.unary_stream and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream, method, guard), **kwargs)
        if handler.stream_stream and inspect.isasyncgenfunction(handler.stream_stream):
            return grpc.stream_stream_rpc_method_handler(_wrap_bidi(handler.stream_stream, method), **kwargs)
        return handler


def receive_limit(settings: Settings, service_names: Sequence[str]) -> int:
    """The largest request any RPC of ``service_names`` accepts: gRPC itself refuses anything
    larger before it is read into Python (the coordinator: 1 MiB by default, not 8)."""
    sizes = RequestGuard(settings).sizes
    pool = descriptor_pool.Default()
    limits = [
        sizes.for_method(f"/{name}/{method.name}")
        for name in service_names
        for method in pool.FindServiceByName(name).methods
    ]
    return max(limits) if limits else MAX_MESSAGE_BYTES


def server_options(settings: Settings, receive_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", receive_bytes),
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
    guard = RequestGuard(settings)
    interceptors.append(DomainErrorInterceptor(guard))
    names = [r.full_name for r in app.services]
    server = grpc.aio.server(
        interceptors=interceptors,
        options=server_options(settings, receive_limit(settings, names)),
        maximum_concurrent_rpcs=None,
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    # Each request of an ExecuteStream message passes the per-call layers an Execute of its own would.
    layers = [i for i in interceptors if isinstance(i, WrappingInterceptor)]
    for reg in app.services:
        execute = layered_execute(reg.servicer, reg.full_name, layers)
        if execute is not None:
            install_execute_stream(reg.servicer, reg.full_name, execute, guard.budget)
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

    tasks = [
        asyncio.create_task(loop_fn(), name=getattr(loop_fn, "__name__", "background")) for loop_fn in app.background
    ]
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


def asyncio_run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)
