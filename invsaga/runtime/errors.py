"""One mapping between errors and ``google.rpc.Status`` with details.

Servers raise a ``DomainError`` subclass; the server bootstrap's interceptor turns it into a
status with ``BadRequest`` field violations or ``ErrorInfo`` details. Any other exception
goes through ``as_domain_error`` (the only place that decides what a client learns of it):

- the database unavailable (a lost or refused connection, a pool timeout, psycopg's
  ``OperationalError`` and SQLAlchemy's errors wrapping it, a deadlock or serialization
  failure): UNAVAILABLE with a plain message, so that clients retry;
- a value the database refused late (psycopg's ``DataError``: a number out of its column's
  range, a text too long, a NUL character): INVALID_ARGUMENT with a field violation (the
  column, when the database names it);
- anything else: INTERNAL with an opaque error id; the exception is logged in full (ERROR)
  under that id.

No status message or detail ever carries SQL, parameters, hosts, ports or class names.
Clients turn an ``AioRpcError`` back into an ``RpcFailure`` whose details are parsed lazily.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterator, Mapping, Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "invsaga"
_DETAILS_KEY = "grpc-status-details-bin"

log = logging.getLogger("invsaga.errors")


class DomainError(Exception):
    """A business or input error with its gRPC code and machine-readable reason."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.violations = list(violations)

    def to_status(self) -> grpc.Status:
        """The rich status, kept small: the status travels in HTTP/2 trailers, which clients
        accept only up to a few KiB (8 KiB by default), so the message and the violations
        are cut to fit (the last violation then says how many were left out)."""
        details: list[any_pb2.Any] = []
        if self.violations:
            details.append(_pack(error_details_pb2.BadRequest(field_violations=_fitting(self.violations))))
        if self.reason:
            info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)
            details.append(_pack(info))
        status = status_pb2.Status(code=self.code.value[0], message=_clip(self.message, MESSAGE_CHARS), details=details)
        return rpc_status.to_status(status)


MESSAGE_CHARS = 1024
VIOLATIONS_BYTES = 4096


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fitting(violations: Sequence[tuple[str, str]]) -> list[error_details_pb2.BadRequest.FieldViolation]:
    out = []
    size = 0
    for i, (f, d) in enumerate(violations):
        item = error_details_pb2.BadRequest.FieldViolation(field=_clip(f, 256), description=_clip(d, 512))
        size += item.ByteSize() + 4
        if size > VIOLATIONS_BYTES:
            out.append(
                error_details_pb2.BadRequest.FieldViolation(
                    field="", description=f"and {len(violations) - i:,} more violation(s) not listed"
                )
            )
            break
        out.append(item)
    return out


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(DomainError):
    """Lock conflicts: another saga took the units first."""

    code = grpc.StatusCode.ABORTED


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Internal(DomainError):
    code = grpc.StatusCode.INTERNAL


# -- everything that is not a DomainError ---------------------------------------------------------
DATABASE_UNAVAILABLE = "the database is unavailable; retry later"
DEPENDENCY_UNAVAILABLE = "a service this call depends on is unavailable; retry later"
TEMPORARILY_UNAVAILABLE = "temporarily unavailable; retry later"
NUL_TEXT = "must not contain NUL (\\x00) characters"

# SQLSTATE of psycopg's DataError subclasses -> what the field violation says.
_DATA_ERRORS = {
    "22003": "a number is out of range for its column",  # numeric_value_out_of_range
    "22001": "a text is longer than its column allows",  # string_data_right_truncation
    "22008": "a date or time is out of range",  # datetime_field_overflow
    "22007": "a date or time is not valid",  # invalid_datetime_format
    "22021": "a text holds a character the database cannot store",  # character_not_in_repertoire
    "22P05": "a text holds a character the database cannot store",  # untranslatable_character
}
_MAX_CHAIN = 8


@functools.cache
def _classes() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(data errors, database unavailability errors), imported on first use: clients need neither driver."""
    data: list[type] = []
    down: list[type] = []
    with contextlib.suppress(ImportError):  # pragma: no cover - a dependency
        import psycopg

        data.append(psycopg.DataError)
        down.append(psycopg.OperationalError)  # also psycopg_pool's PoolTimeout and PoolClosed
    with contextlib.suppress(ImportError):  # pragma: no cover - a dependency
        from sqlalchemy import exc as sa

        data.append(sa.DataError)
        down.extend([sa.OperationalError, sa.TimeoutError, sa.DisconnectionError])
    return tuple(data), tuple(down)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what caused it: SQLAlchemy's ``orig``, ``__cause__``, ``__context__``."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo and len(seen) < _MAX_CHAIN:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend([getattr(current, "orig", None), current.__cause__, current.__context__])


def _rpc_unavailable(error: BaseException) -> bool:
    code = getattr(error, "code", None)
    if not isinstance(error, grpc.RpcError) or not callable(code):
        return False
    try:
        return code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    except Exception:  # noqa: BLE001 - an RpcError without a code
        return False


def _late_value(error: BaseException) -> DomainError:
    """INVALID_ARGUMENT for a value the database refused; the column as the field, if named."""
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate is None and "NUL" in str(error):  # psycopg refuses it before sending
        description = NUL_TEXT
    else:
        description = _DATA_ERRORS.get(sqlstate or "", "a value is not valid for its column")
    diag = getattr(error, "diag", None)
    column = getattr(diag, "column_name", None) or ""
    return InvalidArgument(f"invalid value: {description}", reason="INVALID_VALUE", violations=[(column, description)])


def as_domain_error(error: BaseException, where: str = "") -> DomainError:
    """What a client is told of ``error`` (raised while serving ``where``, an RPC method).

    A ``DomainError`` is told as it is. The rest is logged here, each kind at its level.
    """
    if isinstance(error, DomainError):
        return error
    data, down = _classes()
    for cause in _chain(error):
        if isinstance(cause, DomainError):
            return cause
        if data and isinstance(cause, data) and not hasattr(cause, "orig"):
            mapped = _late_value(cause)
            log.warning("%s: the database refused a value (%s)", where or "call", _summary(cause))
            return mapped
        if isinstance(cause, down) and not hasattr(cause, "orig"):
            log.warning("%s: database unavailable (%s)", where or "call", _summary(cause))
            return Unavailable(DATABASE_UNAVAILABLE, reason="DATABASE_UNAVAILABLE")
        if getattr(cause, "connection_invalidated", False):  # SQLAlchemy: the connection was lost
            log.warning("%s: database connection lost (%s)", where or "call", _summary(cause))
            return Unavailable(DATABASE_UNAVAILABLE, reason="DATABASE_UNAVAILABLE")
        if isinstance(cause, (ConnectionError, TimeoutError)):  # a socket, the statement pipe, a wait
            log.warning("%s: unavailable (%s)", where or "call", _summary(cause))
            return Unavailable(TEMPORARILY_UNAVAILABLE, reason="UNAVAILABLE")
        if _rpc_unavailable(cause):
            log.warning("%s: a downstream call failed (%s)", where or "call", _summary(cause))
            return Unavailable(DEPENDENCY_UNAVAILABLE, reason="DEPENDENCY_UNAVAILABLE")
    error_id = secrets.token_hex(8)
    log.error("internal error, id %s, in %s", error_id, where or "a call", exc_info=error)
    return Internal(f"internal error, id {error_id}", reason="INTERNAL_ERROR", metadata={"error_id": error_id})


def _summary(error: BaseException) -> str:
    """One line for the log: the exception's class and the first line of its text."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def error_status(error: BaseException, where: str = "") -> grpc.Status:
    """The status a client gets for ``error``: see ``as_domain_error``."""
    return as_domain_error(error, where).to_status()


@dataclass
class Violations:
    """Collects field violations and raises them together."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append((field_path, description))

    def raise_if_any(self, message: str = "invalid request") -> None:
        if self.items:
            raise invalid_request(self.items, message)


def invalid_request(violations: Sequence[tuple[str, str]], message: str = "invalid request") -> InvalidArgument:
    """INVALID_ARGUMENT with ``violations``; the message sums up the first five."""
    summary = "; ".join(f"{f}: {d}" for f, d in violations[:5])
    return InvalidArgument(f"{message}: {summary}", violations=violations)


class RpcFailure(Exception):
    """A failed call as the client sees it: code, message and the parsed details."""

    def __init__(self, code: grpc.StatusCode, message: str, details_bin: bytes | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self._details_bin = details_bin

    @classmethod
    def from_error(cls, error: grpc.RpcError) -> "RpcFailure":
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = error.details() if hasattr(error, "details") else str(error)
        details_bin = None
        trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        for key, value in trailing or ():
            if key == _DETAILS_KEY:
                details_bin = value
        return cls(code or grpc.StatusCode.UNKNOWN, message or "", details_bin)

    @cached_property
    def _details(self) -> list[any_pb2.Any]:
        if not self._details_bin:
            return []
        status = status_pb2.Status.FromString(self._details_bin)
        return list(status.details)

    @cached_property
    def error_info(self) -> error_details_pb2.ErrorInfo | None:
        for detail in self._details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info
        return None

    @property
    def reason(self) -> str:
        return self.error_info.reason if self.error_info else ""

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.error_info.metadata) if self.error_info else {}

    @cached_property
    def violations(self) -> list[tuple[str, str]]:
        for detail in self._details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                return [(v.field, v.description) for v in bad.field_violations]
        return []


__all__ = [
    "Aborted",
    "AlreadyExists",
    "DomainError",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RpcFailure",
    "Unauthenticated",
    "Unavailable",
    "Violations",
    "as_domain_error",
    "code_pb2",
    "error_status",
]
