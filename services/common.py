"""What the five services share: their proto enums as the tables store them, the checks of
request fields that read the same in every service, and the small pieces their servicers and
stores repeated (a servicer over one store, fields copied by name, a missing row, List filters)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

from invsaga.runtime.convert import from_timestamp, utcnow
from invsaga.runtime.errors import InvalidArgument, NotFound, Violations

MAX_ID = 64
MAX_TEXT = 256
MAX_LINES = 1000
MAX_QUANTITY = 1_000_000

K = TypeVar("K")
S = TypeVar("S")


class StoreServicer(Generic[S]):
    """A gRPC servicer over its service's store."""

    def __init__(self, store: S) -> None:
        self.store = store


def db_names(enum: Any) -> dict[int, str]:
    """A proto enum's values but UNSPECIFIED, each to its name in lower case without the enum's
    prefix (``ALLOCATION_STATUS_ACTIVE`` -> ``"active"``): what the tables store."""
    prefix = enum.Name(0).removesuffix("UNSPECIFIED")
    return {number: name.removeprefix(prefix).lower() for name, number in enum.items() if number}


def totals(pairs: Iterable[tuple[K, int]]) -> dict[K, int]:
    """The numbers summed per key, the keys in first-seen order."""
    summed: dict[K, int] = {}
    for key, number in pairs:
        summed[key] = summed.get(key, 0) + number
    return summed


def fields(source: Any, names: str) -> dict[str, Any]:
    """The attributes ``names`` (space-separated) of a row or message, by name: the fields of the
    same names of the message built from it, or the statement parameters written from it."""
    return {name: getattr(source, name) for name in names.split()}


def found(row: Any, what: str, key: str) -> Any:
    """``row``, unless there is none: then ``{WHAT}_NOT_FOUND``, no ``what`` of id ``key``."""
    if row is None:
        raise NotFound(f"{what} {key!r} not found", reason=f"{what.upper()}_NOT_FOUND")
    return row


def check_id(v: Violations, name: str, value: str, *, limit: int = MAX_ID, required: bool = True) -> None:
    if not value:
        if required:
            v.add(name, "required")
    elif len(value) > limit:
        v.add(name, f"at most {limit} characters")


def check_length(v: Violations, name: str, value: str, limit: int) -> None:
    """A text that must have 1 to ``limit`` characters, in one violation either way."""
    if not value or len(value) > limit:
        v.add(name, f"must be 1 to {limit} characters")


def check_quantity(v: Violations, name: str, quantity: int) -> None:
    if quantity <= 0:
        v.add(name, "must be > 0")
    elif quantity > MAX_QUANTITY:
        v.add(name, f"must be ≤ {MAX_QUANTITY:,}")


def check_count(v: Violations, name: str, count: int, what: str) -> None:
    if count == 0:
        v.add(name, f"at least one {what}")
    elif count > MAX_LINES:
        v.add(name, f"at most {MAX_LINES} {what}s")


def require(name: str, value: str) -> None:
    if not value:
        raise InvalidArgument(f"{name} is required", violations=[(name, "required")])


def require_input(request: Any, *names: str) -> str:
    """The step's input an Execute request carries, which must be one of ``names``."""
    kind = request.WhichOneof("input")
    if kind not in names:
        wanted = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        raise InvalidArgument(f"Execute needs {wanted}", violations=[("input", f"{wanted} required")])
    return kind


def future_until(request: Any) -> datetime:
    """The ``until`` of an Extend request: required, and in the future."""
    if not request.HasField("until"):
        raise InvalidArgument("until is required", violations=[("until", "required")])
    until = from_timestamp(request.until)
    if until <= utcnow():
        raise InvalidArgument("until must be in the future", violations=[("until", "must be in the future")])
    return until


def status_filter(status: int, to_db: Mapping[int, str], what: str, message: str = "unknown status") -> str:
    """The stored value a List call's status filter stands for ("" when there is none)."""
    if status and status not in to_db:
        raise InvalidArgument(message, violations=[("status", f"unknown {what} status")])
    return to_db.get(status, "")


def matching(**filters: str) -> str:
    """An SQL condition: each column given a value (not empty) equals it (``%(column)s``)."""
    return " AND ".join([f"{column} = %({column})s" for column, value in filters.items() if value] or ["true"])
