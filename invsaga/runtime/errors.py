"""One mapping between domain errors and ``google.rpc.Status`` with details.

Servers raise a ``DomainError`` subclass; the server bootstrap's interceptor turns it into a
status with ``BadRequest`` field violations or ``ErrorInfo`` details. Clients turn an
``AioRpcError`` back into an ``RpcFailure`` whose details are parsed lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping, Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "invsaga"
_DETAILS_KEY = "grpc-status-details-bin"


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
        details: list[any_pb2.Any] = []
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in self.violations
                ]
            )
            details.append(_pack(bad))
        if self.reason:
            info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)
            details.append(_pack(info))
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        return rpc_status.to_status(status)


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


@dataclass
class Violations:
    """Collects field violations and raises them together."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append((field_path, description))

    def raise_if_any(self, message: str = "invalid request") -> None:
        if self.items:
            summary = "; ".join(f"{f}: {d}" for f, d in self.items[:5])
            raise InvalidArgument(f"{message}: {summary}", violations=self.items)


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
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RpcFailure",
    "Unauthenticated",
    "Unavailable",
    "Violations",
    "code_pb2",
]
