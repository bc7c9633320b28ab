"""What the synchronous and the asyncio client share: settings, the error type, request
building, the retry and watch-resume rules (no calls here; their clock is passed in), and
their base class (where and who, the channel's options, the stub)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping, NamedTuple, TypeAlias, cast

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from invsaga.client._connect import UsageError, bearer_token, request_from_dict, target, tls_credentials
from invsaga.runtime.errors import InvalidArgument, RpcFailure

DEFAULT_TIMEOUT = 30.0  # seconds: the deadline of a call, its retries included
DEFAULT_WAIT_TIMEOUT = 600.0  # seconds: the saga's own timeout (3 min) and its compensation fit well within
TERMINAL_STATUSES = frozenset({pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED})
TERMINAL_EVENTS = (
    pb.SAGA_EVENT_TYPE_SAGA_COMPLETED,
    pb.SAGA_EVENT_TYPE_SAGA_COMPENSATED,
    pb.SAGA_EVENT_TYPE_SAGA_FAILED,
)
_DETAILS_KEY = "grpc-status-details-bin"
When: TypeAlias = "datetime | timedelta | Timestamp"  # a time with its zone, or a duration from now


def is_terminal(saga: pb.Saga) -> bool:
    """COMPLETED, COMPENSATED or FAILED: the saga's steps are over (a COMPLETED saga's
    reservation lives on, see docs/lifecycle.md)."""
    return saga.status in TERMINAL_STATUSES


# -- settings -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TLSConfig:
    """PEM files: ``ca`` to verify the coordinator; ``cert`` and ``key`` for mutual TLS. An
    empty field falls back to ``$INVSAGA_TLS_CA`` / ``_CERT`` / ``_KEY``."""

    ca: str = ""
    cert: str = ""
    key: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried. Every retry of a call happens within its deadline."""

    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    # The deadline of one attempt of a call that may be repeated on DEADLINE_EXCEEDED (the
    # reads, StartSaga): one slow attempt must leave time for another.
    attempt_timeout: float = 10.0
    # watch: how long it keeps reconnecting before it gives up, from the first failed attempt
    # (a stream that delivered an event, or stayed up 30 s, before breaking starts it afresh).
    watch_reconnect_timeout: float = 60.0


@dataclass
class SagaPage:
    """One page of ListSagas; an empty ``next_page_token`` means the last page."""

    sagas: list[pb.Saga] = field(default_factory=list)
    next_page_token: str = ""


# -- errors ---------------------------------------------------------------------------------------
class Violation(NamedTuple):
    """A ``google.rpc.BadRequest`` field violation: the field's path and what is wrong with it."""

    field: str
    description: str


class InvsagaError(RpcFailure):
    """Every failure of ``Client`` and ``AsyncClient``: a gRPC status and its details.

    ``code`` (``grpc.StatusCode``), ``message``, ``violations`` (field violations of an
    INVALID_ARGUMENT), ``reason`` and ``metadata`` (``google.rpc.ErrorInfo``: e.g.
    INSUFFICIENT_INVENTORY, REQUEST_ID_REUSED with the saga_id, PICKING_STARTED), parsed lazily.
    """

    __module__ = "invsaga.client"  # where callers import it from (tracebacks, pickling)

    @property
    def violations(self) -> list[Violation]:  # type: ignore[override]
        return [Violation(f, d) for f, d in super().violations]

    @property
    def saga_id(self) -> str:
        """The saga the error names, if any (e.g. the one a reused request_id started)."""
        return self.metadata.get("saga_id", "")

    @classmethod
    def from_status(cls, status: grpc.Status) -> "InvsagaError":
        details = dict(status.trailing_metadata or ()).get(_DETAILS_KEY)  # the last, if repeated
        return cls(status.code, status.details, details)

    @classmethod
    def invalid(cls, field_path: str, description: str, message: str = "") -> "InvsagaError":
        """INVALID_ARGUMENT raised by the client itself, shaped as the coordinator's are."""
        text = message or f"invalid request: {field_path}: {description}"
        return cls.from_status(InvalidArgument(text, violations=[(field_path, description)]).to_status())


def as_error(error: grpc.RpcError) -> InvsagaError:
    return cast(InvsagaError, InvsagaError.from_error(error))


# -- where and who --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    target: str
    token: str = field(repr=False)
    credentials: grpc.ChannelCredentials | None = field(repr=False)


def endpoint(address: str | None, tls: TLSConfig | None, token: str | None, token_file: str | None) -> Endpoint:
    """The coordinator's address, the bearer token and the TLS credentials, each from the
    argument, else the environment, by the same rules as the ``invsaga`` command."""
    try:
        credentials = tls_credentials(tls.ca if tls else None, tls.cert if tls else None, tls.key if tls else None)
        return Endpoint(target(address, "coordinator"), bearer_token(token, token_file), credentials)
    except UsageError as err:
        raise InvsagaError.invalid("connection", str(err), f"cannot connect: {err}") from None


# -- requests -------------------------------------------------------------------------------------
REQUEST_ID_REQUIRED = (
    "required: an idempotency key stable for this order (the same order reserved twice must "
    "reuse it, so that it reserves once)"
)


def start_request(request: Any) -> pb.StartSagaRequest:
    """A StartSagaRequest from one, an InventoryRequest, or a mapping in the proto's field
    names (JSON or proto spelling; ``{"request": {...}}`` or the InventoryRequest itself;
    enum values may be short: ``"NEAREST"``). Refused without a request_id."""
    if isinstance(request, pb.StartSagaRequest):
        out = pb.StartSagaRequest()
        out.CopyFrom(request)
    elif isinstance(request, pb.InventoryRequest):
        out = pb.StartSagaRequest(request=request)
    elif isinstance(request, Mapping):
        try:
            out = pb.StartSagaRequest(request=request_from_dict(_times_as_text(request)))
        except (json_format.ParseError, TypeError, ValueError, AttributeError) as err:
            raise InvsagaError.invalid("request", " ".join(str(err).split())) from None
    else:
        raise TypeError(f"a StartSagaRequest, an InventoryRequest or a mapping, not {type(request).__name__}")
    if not out.request.request_id:
        raise InvsagaError.invalid(
            "request_id", REQUEST_ID_REQUIRED, "request_id is required: invsaga.client never reserves without one"
        )
    return out


def _times_as_text(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` whose ``expired_at`` (also under ``request``), if a datetime or a
    Timestamp, is in the RFC 3339 form the proto's JSON mapping reads."""
    out = dict(data)
    if isinstance(out.get("request"), Mapping):
        out["request"] = _times_as_text(out["request"])
    for key in ("expired_at", "expiredAt"):
        if isinstance(out.get(key), (datetime, timedelta, Timestamp)):
            out[key] = timestamp(out[key], "expired_at").ToJsonString()
    return out


def _enum_value(enum: Any, value: int | str | None, prefix: str, what: str) -> Any:
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        if value not in enum.values():
            raise InvsagaError.invalid(what, f"unknown value {value}")
        return value
    name = str(value).upper()
    try:
        return int(enum.Value(name if name.startswith(prefix) else prefix + name))
    except ValueError:
        raise InvsagaError.invalid(what, f"unknown value {value!r}") from None


def timestamp(value: datetime | timedelta | Timestamp, what: str) -> Timestamp:
    """A Timestamp from a datetime with a time zone, a timedelta from now, or a Timestamp."""
    if isinstance(value, Timestamp):
        return value
    if isinstance(value, timedelta):
        value = datetime.now(timezone.utc) + value
    if not isinstance(value, datetime):
        raise TypeError(f"{what}: a datetime, a timedelta or a Timestamp, not {type(value).__name__}")
    if value.tzinfo is None:
        raise InvsagaError.invalid(what, "a datetime needs a time zone (e.g. datetime.now(timezone.utc))")
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(timezone.utc))
    return ts


def list_request(
    *,
    status: int | str | None,
    order_id: str,
    customer_id: str,
    created_after: datetime | timedelta | Timestamp | None,
    created_before: datetime | timedelta | Timestamp | None,
    reservation_state: int | str | None,
    page_size: int,
    page_token: str,
) -> pb.ListSagasRequest:
    request = pb.ListSagasRequest(
        status=_enum_value(pb.SagaStatus, status, "SAGA_STATUS_", "status"),
        order_id=order_id,
        customer_id=customer_id,
        reservation_state=_enum_value(
            common_pb2.ReservationState, reservation_state, "RESERVATION_STATE_", "reservation_state"
        ),
        page_size=page_size,
        page_token=page_token,
    )
    if created_after is not None:
        request.created_after.CopyFrom(timestamp(created_after, "created_after"))
    if created_before is not None:
        request.created_before.CopyFrom(timestamp(created_before, "created_before"))
    return request


# -- deadlines and retries ------------------------------------------------------------------------
Clock = Callable[[], float]


class Deadline:
    """The end of a call (``None``: no end), in the clock's time."""

    def __init__(self, seconds: float | None, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.at = None if seconds is None else clock() + seconds

    def remaining(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - self.clock())

    def passed(self) -> bool:
        return self.at is not None and self.clock() >= self.at

    def attempt(self, cap: float | None) -> float | None:
        """The deadline of the next attempt: what remains, at most ``cap``."""
        left = self.remaining()
        if cap is None:
            return left
        return cap if left is None else min(left, cap)


class Backoff:
    """Exponential delays with jitter (half fixed, half random), capped at ``max_backoff``."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.current = policy.initial_backoff

    def reset(self) -> None:
        self.current = self.policy.initial_backoff

    def next(self) -> float:
        step = min(self.current, self.policy.max_backoff)
        self.current = min(self.current * self.policy.multiplier, self.policy.max_backoff)
        return step / 2 + random.uniform(0, step / 2)


# RESOURCE_EXHAUSTED reasons that refuse a call before it has any effect, "retry later".
BUSY_REASONS = frozenset({"SERVER_BUSY", "COORDINATOR_BUSY"})


def retryable(error: grpc.RpcError, *, repeatable: bool) -> bool:
    """UNAVAILABLE always (the call did not get through, or the server went away), and a busy
    server's refusal; an attempt's DEADLINE_EXCEEDED only when repeating the call is harmless."""
    code = error.code() if hasattr(error, "code") else None
    if code == grpc.StatusCode.UNAVAILABLE or (repeatable and code == grpc.StatusCode.DEADLINE_EXCEEDED):
        return True
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and as_error(error).reason in BUSY_REASONS


class Retry:
    """One call's retries: ``delay(error)`` is how long to wait before the next attempt, or
    raises the ``InvsagaError`` to give up with."""

    def __init__(self, policy: RetryPolicy, seconds: float, *, repeatable: bool, clock: Clock = time.monotonic):
        self.deadline = Deadline(seconds, clock)
        self.repeatable = repeatable
        self.backoff = Backoff(policy)
        self.cap = policy.attempt_timeout if repeatable else None

    def attempt_timeout(self) -> float | None:
        return self.deadline.attempt(self.cap)

    def delay(self, error: grpc.RpcError) -> float:
        wait = self.backoff.next()
        left = self.deadline.remaining()
        if not retryable(error, repeatable=self.repeatable) or (left is not None and left <= wait):
            raise as_error(error) from error
        return wait


# A watch stream up this long had connected (an attempt to connect gives up after 20 s): its
# breaking starts a new outage, so that an idle watch outlives any number of recycled connections.
STABLE_STREAM_SECONDS = 30.0


class _Gap(Exception):
    pass


class WatchCursor:
    """Where a watch stands, so that a new stream resumes after the last event yielded.

    ``accept(event)`` says whether to yield the event: one at or before the last yielded
    is a repeat (a replay after reconnecting) and is dropped. Unfiltered, the next event must
    be the next seq; a gap makes the watch reconnect once from the last seq, and raises
    DATA_LOSS if the new stream shows it too. ``broken(error)`` is the wait before the next
    stream, or raises the ``InvsagaError`` to give up with. ``types``: the event types asked
    for, values or names (none: every event).
    """

    def __init__(
        self,
        saga_id: str,
        after_seq: int,
        follow_reservation: bool,
        types: Iterable[int | str],
        policy: RetryPolicy,
        timeout: float | None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.saga_id = saga_id
        self.last = after_seq
        self.follow_reservation = follow_reservation
        self.types = [_enum_value(pb.SagaEventType, v, "SAGA_EVENT_TYPE_", "event_types") for v in types]
        self.policy = policy
        self.clock = clock
        self.deadline = Deadline(timeout, clock)
        self.backoff = Backoff(policy)
        self.outage_since: float | None = None
        self.opened_at = clock()
        self.delivered = False
        self.gap_retried = False

    def request(self) -> pb.WatchSagaRequest:
        self.opened_at = self.clock()
        self.delivered = False
        return pb.WatchSagaRequest(
            saga_id=self.saga_id,
            after_seq=self.last,
            event_types=self.types,
            follow_reservation=self.follow_reservation,
        )

    def timeout(self) -> float | None:
        return self.deadline.remaining()

    def accept(self, event: pb.SagaEvent) -> bool:
        if event.seq <= self.last:
            return False
        if not self.types and event.seq != self.last + 1:
            if self.gap_retried:
                raise InvsagaError(
                    grpc.StatusCode.DATA_LOSS,
                    f"saga {self.saga_id}: event {self.last + 1} is missing (the stream went on at {event.seq})",
                )
            self.gap_retried = True
            raise _Gap()
        self.last = event.seq
        self.delivered = True
        self.gap_retried = False
        return True

    def broken(self, error: grpc.RpcError | None) -> float:
        """A stream failed with ``error`` (None: a gap): the wait before the next one."""
        now = self.clock()
        if error is not None:
            if self.deadline.passed() or not retryable(error, repeatable=True):
                raise as_error(error) from error
        # A stream that delivered, or stayed up for a while, ends an outage: this is a new one.
        if self.delivered or now - self.opened_at >= STABLE_STREAM_SECONDS:
            self.backoff.reset()
            self.outage_since = now
        elif self.outage_since is None:
            self.outage_since = now
        elif error is not None and now - self.outage_since > self.policy.watch_reconnect_timeout:
            raise as_error(error) from error
        wait = 0.0 if error is None else self.backoff.next()
        left = self.deadline.remaining()
        if left is not None and left <= wait:
            raise InvsagaError(grpc.StatusCode.DEADLINE_EXCEEDED, f"watch of saga {self.saga_id}: deadline exceeded")
        return wait


GAP = _Gap


def channel_options(policy: RetryPolicy) -> list[tuple[str, Any]]:
    """The mesh's channel options, and reconnection as eager as the retries: gRPC's own
    backoff between connection attempts would otherwise grow to two minutes in an outage."""
    from invsaga.runtime.channels import channel_options as mesh_options

    cap_ms = int(max(policy.max_backoff, 0.1) * 1000)
    return [
        *mesh_options(),
        ("grpc.initial_reconnect_backoff_ms", min(cap_ms, 100)),
        ("grpc.min_reconnect_backoff_ms", min(cap_ms, 100)),
        ("grpc.max_reconnect_backoff_ms", cap_ms),
    ]


class ClientBase:
    """What ``Client`` and ``AsyncClient`` share but their I/O: the endpoint and the settings,
    the stub, and each call's retries. ``_open`` makes the channel."""

    def __init__(
        self,
        address: str | None = None,
        *,
        tls: TLSConfig | None = None,
        token: str | None = None,
        token_file: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        where = endpoint(address, tls, token, token_file)
        self.address = where.target
        self.timeout = timeout
        self.retry = retry
        self._channel = self._open(where, channel_options(retry))
        self._stub = pb_grpc.SagaCoordinatorServiceStub(self._channel)

    def _open(self, where: Endpoint, options: list[tuple[str, Any]]) -> Any:
        """The channel to ``where``, with the token and the TLS credentials it names."""
        raise NotImplementedError

    def __repr__(self) -> str:  # never the token
        return f"{type(self).__name__}({self.address!r})"

    def _retry(self, timeout: float | None, *, repeatable: bool) -> Retry:
        return Retry(self.retry, self.timeout if timeout is None else timeout, repeatable=repeatable)
