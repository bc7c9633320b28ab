"""Client commands of ``invsaga``: start, watch, get, list, cancel, resume, extend, demo, and
the connection, error and exit-status rules every client command (also ``invsaga.cli_admin``) follows.

Each reaches its service at a flag (``--coordinator``, ``--inventory``, ...), else the variable
the processes read (``$INVSAGA_COORDINATOR_ADDR``, ``$INVSAGA_INVENTORY_ADDR``, ...), else
localhost at the service's port (50050-50055). Credentials: ``--token`` (else ``--token-file``,
``$INVSAGA_TOKEN``, ``$INVSAGA_TOKEN_FILE``) as a bearer token and, for TLS, ``--tls-ca`` /
``--tls-cert`` / ``--tls-key`` (else ``$INVSAGA_TLS_CA`` / ``_CERT`` / ``_KEY``).

The saga commands use the Python client, ``invsaga.client.AsyncClient`` (its retries of an
unreachable or busy coordinator, its resuming watch); the operator commands (``invsaga.cli_admin``)
call the participants' stubs. A saga id may be given as a unique prefix (resolved with ListSagas). A failed call prints one
line on stderr (the gRPC code, message, field violations and reason) and exits 1, or 2 when the
input was at fault (INVALID_ARGUMENT, a bad flag, an unreadable file); never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Coroutine, TypeVar

import grpc
import yaml
from google.protobuf import json_format

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga import output
from invsaga.saga_view import console, describe, follow, reservation_line, short_name, strategy_name
from invsaga.client._connect import (
    UsageError,
    address_variable,
    bearer_token,
    request_from_dict,
    target,
    tls_credentials,
)
from invsaga.runtime.config import DEFAULT_PORTS
from invsaga.runtime.errors import RpcFailure

T = TypeVar("T")


def address_argument(parser: argparse.ArgumentParser, service: str) -> None:
    """``--<service>``: where that service listens (default: $INVSAGA_<SERVICE>_ADDR, else its port on localhost)."""
    parser.add_argument(
        f"--{service}",
        default=None,
        metavar="HOST:PORT",
        help=f"the {service} service (default: ${address_variable(service)} or localhost:{DEFAULT_PORTS[service]})",
    )


def credential_arguments(parser: argparse.ArgumentParser) -> None:
    """--token / --token-file and the TLS files, each defaulting to its environment variable."""
    parser.add_argument(
        "--token",
        default=None,
        help="API token sent as a bearer token (default: $INVSAGA_TOKEN); see also --token-file",
    )
    parser.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="read the API token from this file, so it stays out of the process list (default: $INVSAGA_TOKEN_FILE)",
    )
    parser.add_argument(
        "--tls-ca", default=None, metavar="PEM", help="CA certificate, for TLS (default: $INVSAGA_TLS_CA)"
    )
    parser.add_argument(
        "--tls-cert", default=None, metavar="PEM", help="client certificate, for mTLS (default: $INVSAGA_TLS_CERT)"
    )
    parser.add_argument(
        "--tls-key", default=None, metavar="PEM", help="client certificate's key, for mTLS (default: $INVSAGA_TLS_KEY)"
    )


def connection_arguments(parser: argparse.ArgumentParser, service: str = "coordinator") -> None:
    """The service's address flag, the token and the TLS files; then ``-o/--output``."""
    address_argument(parser, service)
    credential_arguments(parser)
    output.add_output_argument(parser)


def token_of(args: argparse.Namespace) -> str:
    """--token, else --token-file, else $INVSAGA_TOKEN, else $INVSAGA_TOKEN_FILE; empty: no token."""
    return bearer_token(getattr(args, "token", None), getattr(args, "token_file", None))


def target_of(args: argparse.Namespace, service: str) -> str:
    return target(getattr(args, service, None), service)


def credentials_of(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from the flags or $INVSAGA_TLS_*; None for plaintext."""
    return tls_credentials(*(getattr(args, f"tls_{k}", None) for k in ("ca", "cert", "key")))


def connector_of(args: argparse.Namespace) -> Callable[[str], grpc.aio.Channel]:
    """Opens a channel to an address with the token and TLS files the command's flags (or the
    environment) name; they are read here, so that an unreadable one fails before any call."""
    from invsaga.runtime.channels import open_channel
    from invsaga.runtime.security import bearer_interceptors

    token, credentials = token_of(args), credentials_of(args)
    interceptors = bearer_interceptors(token) if token else []
    return lambda address: open_channel(address, interceptors, credentials)


def channel_of(args: argparse.Namespace, service: str) -> grpc.aio.Channel:
    """The channel to ``service`` the command's flags (or the environment) describe."""
    return connector_of(args)(target_of(args, service))


def command_name(args: argparse.Namespace) -> str:
    sub = getattr(args, "subcommand", None)
    return f"{args.command} {sub}" if sub else str(args.command)


def failure_line(failure: RpcFailure) -> str:
    """``CODE: message (field: problem; ...) [REASON]`` on one line."""
    line = f"{failure.code.name}: {' '.join(failure.message.split())}"
    told = [f"{field}: {' '.join(text.split())}" for field, text in failure.violations]
    told = [v for v in told if v not in line]  # the message may already name them
    if told:
        line += " (" + "; ".join(told) + ")"
    if failure.reason and failure.reason != failure.code.name:
        line += f" [{failure.reason}]"
    return line


def report_failure(args: argparse.Namespace, error: grpc.RpcError | RpcFailure) -> int:
    """One line on stderr; exit status 2 for INVALID_ARGUMENT (the input was at fault), else 1."""
    failure = error if isinstance(error, RpcFailure) else RpcFailure.from_error(error)
    print(f"invsaga {command_name(args)}: {failure_line(failure)}", file=sys.stderr, flush=True)
    return 2 if failure.code == grpc.StatusCode.INVALID_ARGUMENT else 1


def run_command(args: argparse.Namespace, command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> int:
    """Run an async command: bad input exits 2, a failed call 1, each with one line on stderr."""
    try:
        return asyncio.run(command(args))
    except UsageError as err:
        print(f"invsaga {command_name(args)}: {err}", file=sys.stderr, flush=True)
        return 2
    except (grpc.RpcError, RpcFailure) as err:  # RpcFailure: invsaga.client's InvsagaError
        return report_failure(args, err)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


CALL_TIMEOUT = 15.0  # seconds a saga command's call may take, its retries (UNAVAILABLE, busy) included


def saga_client(args: argparse.Namespace) -> Any:
    """An ``invsaga.client.AsyncClient`` for the coordinator the flags (or the environment) name.

    The token and TLS files are read here first, so that an unreadable one is a usage error."""
    from invsaga.client import AsyncClient, TLSConfig

    token = token_of(args)
    credentials_of(args)
    tls = TLSConfig(ca=args.tls_ca or "", cert=args.tls_cert or "", key=args.tls_key or "")
    return AsyncClient(target_of(args, "coordinator"), tls=tls, token=token or None, timeout=CALL_TIMEOUT)


FULL_SAGA_ID = 32  # characters of a saga id (a UUID in hex)
PREFIX_SCAN_LIMIT = 100_000  # most sagas looked through to resolve a prefix


async def resolve_saga_id(client: Any, text: str) -> str:
    """A whole saga id from ``text``, a whole id or a unique prefix of one (ListSagas, newest first)."""
    text = text.strip()
    if not text:
        raise UsageError("a saga id, or a unique prefix of one, is required")
    if len(text) >= FULL_SAGA_ID:
        return text
    found: list[str] = []
    seen, token = 0, ""
    while True:
        page = await client.list_page(page_size=1000, page_token=token)
        for saga in page.sagas:
            if saga.saga_id.startswith(text) and saga.saga_id not in found:
                found.append(saga.saga_id)
        if len(found) > 1:
            raise UsageError(
                f"saga id prefix {text!r} is ambiguous: {', '.join(found[:3])}{', ...' if len(found) > 3 else ''}"
                " (give more characters)"
            )
        seen += len(page.sagas)
        token = page.next_page_token
        if not token or seen >= PREFIX_SCAN_LIMIT:
            break
    if not found:
        among = f" among the newest {seen}" if token else ""
        raise UsageError(f"no saga id starts with {text!r}{among}")
    return found[0]


def load_message(path: str, what: str, parse: Callable[[dict[str, Any]], T]) -> T:
    """``parse`` of a YAML or JSON file holding one mapping (the ``what`` fields); any problem
    is a UsageError naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise UsageError(
            f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {' '.join(str(err).split())}"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with the {what} fields")
    try:
        return parse(data)
    except (json_format.ParseError, TypeError, ValueError) as err:
        raise UsageError(f"{path}: {' '.join(str(err).split())}") from None


async def start(args: argparse.Namespace) -> int:
    request = load_message(args.file, "InventoryRequest", request_from_dict)
    made_up = not request.request_id
    if made_up:  # the idempotency key: one per start of this file
        request.request_id = uuid.uuid4().hex
    async with saga_client(args) as client:
        saga = await client.reserve(request)
        if made_up:
            print(
                f"warning: {args.file} has no request_id; this start used {request.request_id}, so starting the"
                " file again reserves the stock again (give it a request_id to make a repeat answer with this saga)",
                file=sys.stderr,
            )
        if args.output == "table":
            print(saga.saga_id, flush=True)
        else:
            output.emit(pb.StartSagaResponse(saga_id=saga.saga_id, saga=saga), args.output)
        if not args.watch:
            return 0
        saga = await follow(client, saga.saga_id, args.output)
    if args.output == "table":
        describe(saga)
    return 0 if saga.status == pb.SAGA_STATUS_COMPLETED else 1


async def watch(args: argparse.Namespace) -> int:
    async with saga_client(args) as client:
        saga_id = await resolve_saga_id(client, args.saga_id)
        saga = await follow(client, saga_id, args.output, follow_reservation=args.reservation)
    if args.output == "table":
        describe(saga)
    return 0


async def get(args: argparse.Namespace) -> int:
    async with saga_client(args) as client:
        saga = await client.get(await resolve_saga_id(client, args.saga_id))
    if args.output != "table":
        output.emit(pb.GetSagaResponse(saga=saga), args.output)
    else:
        describe(saga)
    return 0


def enum_names(enum: Any, prefix: str) -> list[str]:
    """The names of an enum's values without their prefix, for a flag's choices (not UNSPECIFIED)."""
    return [name.removeprefix(prefix) for name in enum.keys() if not name.endswith("_UNSPECIFIED")]


def enum_flag(parser: argparse.ArgumentParser, flag: str, names: list[str], help_text: str) -> None:
    """A flag taking one of ``names``, in any case (``--status completed``)."""
    parser.add_argument(flag, type=str.upper, choices=names, default=None, metavar="|".join(names), help=help_text)


SAGA_STATUSES = enum_names(pb.SagaStatus, "SAGA_STATUS_")
RESERVATION_STATES = enum_names(common_pb2.ReservationState, "RESERVATION_STATE_")


async def collect_pages(call: Callable[..., Any], request: Any, field: str, args: argparse.Namespace) -> Any:
    """One page (``--limit``, ``--page-token``), or with ``--all`` every page merged into one answer."""
    request.page_size = args.limit
    request.page_token = args.page_token or ""
    reply = await call(request, timeout=30)
    if not args.all:
        return reply
    merged = type(reply)()
    while True:
        getattr(merged, field).extend(getattr(reply, field))
        if not reply.next_page_token:
            return merged
        request.page_token = reply.next_page_token
        reply = await call(request, timeout=30)


def paging_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--limit", type=_positive, default=50, metavar="N", help=f"{what} per page (default 50; the server caps it)"
    )
    parser.add_argument(
        "--page-token", default=None, metavar="TOKEN", help="the page after the one that printed this token"
    )
    parser.add_argument("--all", action="store_true", help="every page, not only the first")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def more_pages(reply: Any) -> None:
    if reply.next_page_token:
        output.note(f"(more: --page-token {reply.next_page_token}, or --all)")


async def list_sagas(args: argparse.Namespace) -> int:
    filters: dict[str, Any] = {
        "status": args.status,
        "order_id": args.order or "",
        "customer_id": args.customer or "",
        "reservation_state": args.reservation,
        "created_after": _timestamp(args.since, flag="--since", past=True) if args.since else None,
        "created_before": _timestamp(args.before, flag="--before", past=True) if args.before else None,
    }
    async with saga_client(args) as client:
        page = await client.list_page(page_size=args.limit, page_token=args.page_token or "", **filters)
        reply = pb.ListSagasResponse(sagas=page.sagas, next_page_token=page.next_page_token)
        while args.all and page.next_page_token:
            page = await client.list_page(page_size=args.limit, page_token=page.next_page_token, **filters)
            reply.sagas.extend(page.sagas)
        if args.all:
            reply.next_page_token = ""
    if args.output != "table":
        output.emit(reply, args.output)
        return 0
    rows = [
        (
            output.saga_id_cell(saga.saga_id),
            saga.request.order_id,
            short_name(pb.SagaStatus.Name(saga.status)),
            output.enum_name(common_pb2.ReservationState, saga.reservation.state, "RESERVATION_STATE_"),
            strategy_name(saga.request.allocation_strategy),
            saga.failure.reason,
            output.local_time(saga.created_at),
        )
        for saga in reply.sagas
    ]
    output.print_table(("saga_id", "order", "status", "reservation", "strategy", "reason", "created"), rows)
    more_pages(reply)
    return 0


async def demo(args: argparse.Namespace) -> int:
    from invsaga.demo import run_demo

    with tempfile.TemporaryDirectory(prefix="invsaga-demo-") as workdir:
        return await run_demo(Path(workdir), database_url=args.database_url)


def _timestamp(text: str, *, flag: str = "--until", past: bool = False) -> Any:
    """An ISO 8601 time (a zone required) or a duration (``90s``, ``30m``, ``2h``) from now,
    or before now when ``past``."""
    from datetime import timezone

    from google.protobuf.timestamp_pb2 import Timestamp

    from invsaga.runtime.config import ConfigError, parse_duration

    ts = Timestamp()
    try:
        seconds = parse_duration(text, name=flag)
    except (ConfigError, ValueError):
        seconds = None
    if seconds is not None:
        now = datetime.now(timezone.utc).timestamp()
        ts.FromNanoseconds(int((now - seconds if past else now + seconds) * 1e9))
        return ts
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{flag}: {text!r} is neither a time (2026-12-24T18:00:00+00:00) nor a duration (30m)"
        ) from None
    if when.tzinfo is None:
        raise UsageError(f"{flag}: {text!r} has no time zone (add +00:00 or Z)")
    ts.FromDatetime(when.astimezone(timezone.utc))
    return ts


async def cancel(args: argparse.Namespace) -> int:
    async with saga_client(args) as client:
        saga_id = await resolve_saga_id(client, args.saga_id)
        saga = await client.cancel(saga_id, reason=args.reason or "", release_unpicked=args.release_unpicked)
    if args.output != "table":
        output.emit(pb.CancelSagaResponse(saga=saga), args.output)
    elif saga.HasField("reservation"):
        console.print(reservation_line(saga))
    else:
        console.print(f"saga {saga.saga_id}: {short_name(pb.SagaStatus.Name(saga.status))} (cancel requested)")
    return 0


async def resume(args: argparse.Namespace) -> int:
    async with saga_client(args) as client:
        saga = await client.resume(await resolve_saga_id(client, args.saga_id))
    if args.output != "table":
        output.emit(pb.ResumeSagaResponse(saga=saga), args.output)
    else:
        console.print(f"saga {saga.saga_id}: {short_name(pb.SagaStatus.Name(saga.status))} (compensation resumed)")
    return 0


async def extend(args: argparse.Namespace) -> int:
    until = _timestamp(args.until)
    async with saga_client(args) as client:
        saga_id = await resolve_saga_id(client, args.saga_id)
        reservation = await client.extend(saga_id, until)
    if args.output != "table":
        output.emit(pb.ExtendReservationResponse(reservation=reservation), args.output)
    else:
        console.print(reservation_line(pb.Saga(saga_id=saga_id, reservation=reservation)))
    return 0
