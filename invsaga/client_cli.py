"""Client commands of ``invsaga``: start, watch, get, list, cancel, resume, extend, demo.

Each reaches the coordinator at ``--coordinator`` (else ``$INVSAGA_COORDINATOR_ADDR``, else
localhost:50050), with ``--token`` (else ``$INVSAGA_TOKEN``) as a bearer token and, for TLS,
``--tls-ca`` / ``--tls-cert`` / ``--tls-key`` (else ``$INVSAGA_TLS_CA`` / ``_CERT`` / ``_KEY``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator

import grpc
import yaml
from google.protobuf import json_format
from rich.console import Console
from rich.live import Live
from rich.table import Table

from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from invsaga.runtime.errors import RpcFailure

console = Console()
DEFAULT_COORDINATOR = "localhost:50050"


class UsageError(Exception):
    """Bad input on the command line: printed as one line, exit status 2 (no traceback)."""


def connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--coordinator, --token and the TLS files, each defaulting to its environment variable."""
    parser.add_argument(
        "--coordinator", default=None, help=f"host:port (default: $INVSAGA_COORDINATOR_ADDR or {DEFAULT_COORDINATOR})"
    )
    parser.add_argument("--token", default=None, help="API token sent as a bearer token (default: $INVSAGA_TOKEN)")
    parser.add_argument("--tls-ca", default=None, help="CA certificate, for TLS (default: $INVSAGA_TLS_CA)")
    parser.add_argument("--tls-cert", default=None, help="client certificate, for mTLS (default: $INVSAGA_TLS_CERT)")
    parser.add_argument("--tls-key", default=None, help="client key, for mTLS (default: $INVSAGA_TLS_KEY)")


def coordinator_channel(args: argparse.Namespace) -> grpc.aio.Channel:
    """The channel the command's flags (or the environment) describe."""
    import os

    from invsaga.runtime.channels import open_channel
    from invsaga.runtime.security import bearer_interceptors

    def pick(flag: str, env: str) -> str:
        return getattr(args, flag, None) or os.environ.get(env, "")

    target = pick("coordinator", "INVSAGA_COORDINATOR_ADDR") or DEFAULT_COORDINATOR
    token = pick("token", "INVSAGA_TOKEN")
    ca, cert, key = (pick(f"tls_{k}", f"INVSAGA_TLS_{k.upper()}") for k in ("ca", "cert", "key"))
    credentials = None
    if ca or cert:
        try:
            read = {
                name: Path(path).read_bytes() if path else None
                for name, path in (("ca", ca), ("cert", cert), ("key", key))
            }
        except OSError as err:
            raise UsageError(f"cannot read a TLS file: {err}") from None
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read["ca"], private_key=read["key"], certificate_chain=read["cert"]
        )
    return open_channel(target, bearer_interceptors(token) if token else [], credentials)


TERMINAL = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED)
_ENUM_PREFIX = {"allocation_strategy": "ALLOCATION_STRATEGY_", "request_type": "REQUEST_TYPE_"}
STATUS_STYLE = {
    "SUCCEEDED": "green",
    "COMPLETED": "green",
    "COMPENSATED": "yellow",
    "FAILED": "red",
    "RUNNING": "cyan",
    "COMPENSATING": "magenta",
    "SKIPPED": "dim",
    "PENDING": "dim",
}


def request_from_dict(data: dict[str, Any]) -> pb.InventoryRequest:
    """An InventoryRequest from YAML/JSON; enum values may be short (``priority`` → ALLOCATION_STRATEGY_PRIORITY)."""
    data = dict(data.get("request", data))
    for key, prefix in _ENUM_PREFIX.items():
        value = data.get(key)
        if isinstance(value, str) and not value.upper().startswith(prefix):
            data[key] = prefix + value.upper()
    if "expired_at" in data and not isinstance(data["expired_at"], str):
        data["expired_at"] = str(data["expired_at"])
    return json_format.ParseDict(data, pb.InventoryRequest())


def load_request(path: str) -> pb.InventoryRequest:
    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a mapping with the InventoryRequest fields")
    return request_from_dict(data)


def _short(enum_name: str) -> str:
    for prefix in ("SAGA_STATUS_", "STEP_STATUS_", "SAGA_EVENT_TYPE_"):
        if enum_name.startswith(prefix):
            return enum_name[len(prefix) :]
    return enum_name


def _report(error: grpc.RpcError) -> int:
    failure = RpcFailure.from_error(error)
    console.print(f"[red]{failure.code.name}[/red]: {failure.message}")
    for field, description in failure.violations:
        console.print(f"  {field}: {description}")
    if failure.reason:
        console.print(f"  reason: {failure.reason} {failure.metadata or ''}")
    return 1


def saga_table(saga: pb.Saga) -> Table:
    status = _short(pb.SagaStatus.Name(saga.status))
    table = Table(title=f"saga {saga.saga_id}  [{STATUS_STYLE.get(status, '')}]{status}[/]", title_justify="left")
    for column in ("step", "status", "attempts", "seconds", "error"):
        table.add_column(column)
    for step in saga.steps:
        st = _short(pb.StepStatus.Name(step.status))
        seconds = ""
        if step.HasField("started_at") and step.HasField("finished_at"):
            seconds = f"{(step.finished_at.ToNanoseconds() - step.started_at.ToNanoseconds()) / 1e9:.3f}"
        table.add_row(step.name, f"[{STATUS_STYLE.get(st, '')}]{st}[/]", str(step.attempts), seconds, step.error)
    return table


def describe(saga: pb.Saga) -> None:
    console.print(saga_table(saga))
    if saga.allocation.lines:
        strategy = saga.allocation.strategy
        console.print(
            f"allocation {saga.allocation.allocation_id} ({_strategy(strategy)}, cost {saga.allocation.total_cost:.2f}"
            f"{'' if saga.allocation.optimal or strategy != 4 else ', not proven optimal'}): "
            + ", ".join(f"{l.warehouse_id}:{l.sku}×{l.quantity}" for l in saga.allocation.lines)
        )
    for picklist in saga.picklists:
        console.print(f"picklist {picklist.picklist_id} @ {picklist.warehouse_id}: {len(picklist.lines)} lines")
    if saga.failure.reason:
        f = saga.failure
        console.print(f"[yellow]failure[/] at {f.step or '-'}: {f.reason} {f.code} {f.message}")
        for s in f.shortages:
            console.print(f"  short {s.sku}: required {s.required}, available {s.available}")
    if saga.compensation_failure.reason:
        console.print(
            f"[red]compensation failed[/] at {saga.compensation_failure.step}: {saga.compensation_failure.message}"
        )
    if saga.kind == pb.SAGA_KIND_TRANSFER:
        from invsaga.transfer_cli import transfer_line

        console.print(transfer_line(saga))
    elif saga.HasField("reservation"):
        console.print(_reservation_line(saga))
    if saga.cancel_reason:
        console.print(f"cancelled: {saga.cancel_reason}")


def _strategy(value: int) -> str:
    from invsaga.common.v1 import common_pb2

    return common_pb2.AllocationStrategy.Name(value).removeprefix("ALLOCATION_STRATEGY_")


async def _events(stub, saga_id: str, after: int = 0) -> AsyncIterator[pb.SagaEvent]:
    """Follow a saga's events, reconnecting with the last seq if the stream breaks."""
    last = after
    while True:
        try:
            async for reply in stub.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id, after_seq=last)):
                last = reply.event.seq
                yield reply.event
            return
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.5)


async def follow(stub, saga_id: str) -> pb.Saga:
    """Live per-step progress until the saga ends; returns the final saga."""
    saga = (await stub.GetSaga(pb.GetSagaRequest(saga_id=saga_id))).saga
    if console.is_terminal:
        with Live(saga_table(saga), console=console, refresh_per_second=10) as live:
            async for _ in _events(stub, saga_id):
                saga = (await stub.GetSaga(pb.GetSagaRequest(saga_id=saga_id))).saga
                live.update(saga_table(saga))
    else:
        async for ev in _events(stub, saga_id):
            detail = ""
            if ev.detail.code or ev.detail.message:
                detail = f" {ev.detail.code} {ev.detail.reason} {ev.detail.message}".rstrip()
            step_status = _short(pb.StepStatus.Name(ev.step_status)) if ev.step_status else ""
            print(
                f"{ev.seq:>3} {_short(pb.SagaEventType.Name(ev.type)):<22} {ev.step:<18} "
                f"{step_status:<12} {_short(pb.SagaStatus.Name(ev.status))}{detail}",
                flush=True,
            )
        saga = (await stub.GetSaga(pb.GetSagaRequest(saga_id=saga_id))).saga
    return saga


async def start(args: argparse.Namespace) -> int:
    request = load_request(args.file)
    async with coordinator_channel(args) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        try:
            reply = await stub.StartSaga(pb.StartSagaRequest(request=request), timeout=10)
        except grpc.aio.AioRpcError as error:
            return _report(error)
        print(reply.saga_id, flush=True)
        if not args.watch:
            return 0
        saga = await follow(stub, reply.saga_id)
        describe(saga)
        return 0 if saga.status == pb.SAGA_STATUS_COMPLETED else 1


async def watch(args: argparse.Namespace) -> int:
    async with coordinator_channel(args) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        try:
            saga = await follow(stub, args.saga_id)
        except grpc.aio.AioRpcError as error:
            return _report(error)
        describe(saga)
        return 0


async def get(args: argparse.Namespace) -> int:
    async with coordinator_channel(args) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        try:
            saga = (await stub.GetSaga(pb.GetSagaRequest(saga_id=args.saga_id), timeout=10)).saga
        except grpc.aio.AioRpcError as error:
            return _report(error)
        describe(saga)
        return 0


async def list_sagas(args: argparse.Namespace) -> int:
    status = 0
    if args.status:
        name = args.status.upper()
        status = pb.SagaStatus.Value(name if name.startswith("SAGA_STATUS_") else f"SAGA_STATUS_{name}")
    async with coordinator_channel(args) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        try:
            reply = await stub.ListSagas(pb.ListSagasRequest(status=status, page_size=args.limit), timeout=10)
        except grpc.aio.AioRpcError as error:
            return _report(error)
    from invsaga.common.v1 import common_pb2

    table = Table()
    table.add_column("saga_id", no_wrap=True, overflow="ignore")  # whole, to copy
    for column in ("order", "status", "reservation", "strategy", "reason", "created (UTC)"):
        table.add_column(column)
    for saga in reply.sagas:
        reservation = saga.reservation.state
        table.add_row(
            saga.saga_id,
            saga.request.order_id,
            _short(pb.SagaStatus.Name(saga.status)),
            common_pb2.ReservationState.Name(reservation).removeprefix("RESERVATION_STATE_") if reservation else "",
            _strategy(saga.request.allocation_strategy),
            saga.failure.reason,
            saga.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)
    if reply.next_page_token:
        console.print(f"(more than {len(reply.sagas)}: raise --limit to see more)")
    return 0


async def demo(args: argparse.Namespace) -> int:
    from invsaga.demo import run_demo

    with tempfile.TemporaryDirectory(prefix="invsaga-demo-") as workdir:
        return await run_demo(Path(workdir), database_url=args.database_url)


def _timestamp(text: str) -> Any:
    """An ISO 8601 time (a zone required) or a duration from now (``90s``, ``30m``, ``2h``)."""
    from datetime import datetime, timezone

    from google.protobuf.timestamp_pb2 import Timestamp

    from invsaga.runtime.config import ConfigError, parse_duration

    ts = Timestamp()
    try:
        seconds = parse_duration(text, name="--until")
    except (ConfigError, ValueError):
        seconds = None
    if seconds is not None:
        ts.FromNanoseconds(int((datetime.now(timezone.utc).timestamp() + seconds) * 1e9))
        return ts
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--until: {text!r} is neither a time (2026-12-24T18:00:00+00:00) nor a duration (30m)"
        ) from None
    if when.tzinfo is None:
        raise UsageError(f"--until: {text!r} has no time zone (add +00:00 or Z)")
    ts.FromDatetime(when.astimezone(timezone.utc))
    return ts


def _reservation_line(saga: pb.Saga) -> str:
    from invsaga.common.v1 import common_pb2

    r = saga.reservation
    name = lambda state: common_pb2.ReservationState.Name(state).removeprefix("RESERVATION_STATE_")  # noqa: E731
    parts = ", ".join(f"{w.warehouse_id} {name(w.state)}" for w in r.warehouses)
    until = r.expires_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC") if r.HasField("expires_at") else "-"
    return f"reservation {name(r.state)} (expires {until}): {parts}"


async def cancel(args: argparse.Namespace) -> int:
    async with coordinator_channel(args) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        request = pb.CancelSagaRequest(
            saga_id=args.saga_id, reason=args.reason or "", release_unpicked=args.release_unpicked
        )
        try:
            saga = (await stub.CancelSaga(request, timeout=30)).saga
        except grpc.aio.AioRpcError as error:
            return _report(error)
    if saga.HasField("reservation"):
        console.print(_reservation_line(saga))
    else:
        console.print(f"saga {saga.saga_id}: {_short(pb.SagaStatus.Name(saga.status))} (cancel requested)")
    return 0


async def resume(args: argparse.Namespace) -> int:
    async with coordinator_channel(args) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        try:
            saga = (await stub.ResumeSaga(pb.ResumeSagaRequest(saga_id=args.saga_id), timeout=30)).saga
        except grpc.aio.AioRpcError as error:
            return _report(error)
    console.print(f"saga {saga.saga_id}: {_short(pb.SagaStatus.Name(saga.status))} (compensation resumed)")
    return 0


async def extend(args: argparse.Namespace) -> int:
    until = _timestamp(args.until)
    async with coordinator_channel(args) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        try:
            reply = await stub.ExtendReservation(
                pb.ExtendReservationRequest(saga_id=args.saga_id, until=until), timeout=30
            )
        except grpc.aio.AioRpcError as error:
            return _report(error)
    console.print(_reservation_line(pb.Saga(saga_id=args.saga_id, reservation=reply.reservation)))
    return 0
