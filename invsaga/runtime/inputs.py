"""What every request is held to before any servicer sees it: size, in-flight bytes, content.

The server bootstrap (``runtime/server.py``) applies these to each call, in one place:

- ``RequestLimits``: a per-RPC ceiling on the serialized request (``StartSaga`` 1 MiB by
  default, a step call 8 MiB, anything else 1 MiB), checked on the raw bytes before they are
  decoded; and a server-wide budget of request bytes in flight (decoded and being served):
  past it a call is refused with RESOURCE_EXHAUSTED before it is decoded.
- ``ContentChecker``: generic rules over a decoded request, whatever its type. No string
  field anywhere in it (map keys and ``Struct`` text included) may hold a NUL character (the
  database cannot store one); every ``Timestamp`` must lie within 0001-01-01..9999-12-31 with
  nanos in 0..999,999,999; every ``Struct`` (a saga's ``metadata``) is at most
  ``struct_bytes`` serialized and ``struct_depth`` levels deep. Its violations become
  INVALID_ARGUMENT with a ``BadRequest`` naming each field.

The content walk is cheap when it can be: a request whose bytes hold no zero byte cannot
hold a NUL character, so only the paths that can reach a ``Timestamp`` or a ``Struct`` are
walked (per message type, worked out once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from invsaga.runtime.access import STEP_METHODS
from invsaga.runtime.errors import DomainError, ResourceExhausted

MiB = 1024 * 1024
KiB = 1024

# google.protobuf.Timestamp's own range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799
MAX_NANOS = 999_999_999
MAX_VIOLATIONS = 20

# Their requests carry whole step requests, each checked on its own as its Execute would be.
ENVELOPE_METHODS = ("ExecuteStream",)

_TIMESTAMP = "google.protobuf.Timestamp"
_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST_VALUE = "google.protobuf.ListValue"
_STRUCTS = (_STRUCT, _VALUE, _LIST_VALUE)

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def split_method(full_method: str) -> tuple[str, str]:
    """("invsaga.inventory.v1.InventoryStepService", "Execute") of "/invsaga...Service/Execute"."""
    service, _, name = full_method.lstrip("/").rpartition("/")
    return service, name


# -- sizes ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SizeLimits:
    start_saga: int = 1 * MiB
    request: int = 1 * MiB
    step_request: int = 8 * MiB

    def for_method(self, full_method: str) -> int:
        """The largest serialized request ``full_method`` accepts."""
        if full_method.endswith("/StartSaga"):
            return self.start_saga
        service, name = split_method(full_method)
        if name in STEP_METHODS and service.endswith("StepService"):
            return self.step_request
        return self.request


class RequestBudget:
    """The server-wide budget of request bytes in flight.

    ``fits(n)`` is asked before a request is decoded (refused: not decoded at all); ``take``
    counts it once its handler starts and ``give_back`` when the handler ends. A request is
    counted only while its handler runs, so a call cancelled between the two never holds any.
    A single request always fits an idle server.
    """

    __slots__ = ("limit", "used", "_sizes")

    def __init__(self, limit: int = 32 * MiB) -> None:
        self.limit = limit
        self.used = 0
        self._sizes: dict[int, int] = {}  # id(decoded request) -> its serialized size

    def fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.limit

    def note(self, message: Any, size: int) -> None:
        """``message`` was decoded from ``size`` bytes (its handler takes them)."""
        sizes = self._sizes
        if len(sizes) >= 4096:  # requests whose handler never ran (cancelled first): forget them
            sizes.clear()
        sizes[id(message)] = size

    def take(self, message: Any) -> int | None:
        """Count ``message``'s bytes as in flight; None (nothing counted) if they do not fit."""
        size = self._sizes.pop(id(message), 0)
        if size and not self.fits(size):
            return None
        self.used += size
        return size

    def give_back(self, size: int) -> None:
        self.used -= size


def too_large(full_method: str, size: int, limit: int) -> DomainError:
    _, name = split_method(full_method)
    return ResourceExhausted(
        f"the request is {size:,} bytes; {name} accepts at most {limit:,}",
        reason="REQUEST_TOO_LARGE",
        metadata={"size": str(size), "limit": str(limit)},
    )


def server_busy(limit: int) -> DomainError:
    return ResourceExhausted(
        "the server is busy: too many request bytes in flight; retry later",
        reason="SERVER_BUSY",
        metadata={"limit": str(limit)},
    )


# -- content --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Plan:
    """How to walk one message type."""

    # Every field the content rules may apply to: name -> (kind, repeated), kind one of
    # "string", "timestamp", "struct", "message", "map"; for the full walk (the request's
    # bytes hold a zero byte).
    kinds: dict[str, tuple[str, bool]]
    # Only the fields that can lead to a Timestamp or a Struct, as (name, repeated, kind,
    # descriptor): the walk when no NUL can occur.
    special: tuple[tuple[str, bool, str, FieldDescriptor], ...]


class ContentChecker:
    """NUL-free strings, Timestamps in range, bounded Structs, in any request message."""

    def __init__(self, struct_bytes: int = 64 * KiB, struct_depth: int = 8) -> None:
        self.struct_bytes = struct_bytes
        self.struct_depth = struct_depth
        self._plans: dict[str, _Plan] = {}
        self._reaches: dict[str, bool] = {}

    def violations(self, message: Any, maybe_nul: bool = True) -> list[tuple[str, str]]:
        """Every rule ``message`` breaks, as (field path, description); at most MAX_VIOLATIONS.

        ``maybe_nul``: False when the serialized request holds no zero byte (so no string in
        it holds a NUL): only Timestamps and Structs are then looked at.
        """
        out: list[tuple[str, str]] = []
        self._walk(message, "", out, maybe_nul)
        return out[:MAX_VIOLATIONS]

    # -- the walks
    def _special(self, message: Any, prefix: str, out: list) -> None:
        """Only the paths to Timestamps and Structs (no string can hold a NUL)."""
        descriptor = message.DESCRIPTOR
        plan = self._plans.get(descriptor.full_name) or self._plan(descriptor)
        for name, repeated, kind, fd in plan.special:
            if repeated:
                value = getattr(message, name)
                if not value:
                    continue
                if kind == "map":
                    self._walk_map(fd, value, prefix + name, out, False)
                else:
                    for i, item in enumerate(value):
                        self._one(kind, item, f"{prefix}{name}[{i}]", out, False)
            elif message.HasField(name):
                self._one(kind, getattr(message, name), prefix + name, out, False)

    def _walk(self, message: Any, prefix: str, out: list, maybe_nul: bool) -> None:
        if not maybe_nul:
            return self._special(message, prefix, out)
        plan = self._plan(message.DESCRIPTOR)
        for fd, value in message.ListFields():
            if len(out) >= MAX_VIOLATIONS:
                return
            kind, repeated = plan.kinds.get(fd.name, (None, False))
            if kind is None:
                continue
            path = prefix + fd.name
            if kind == "string":
                if repeated:
                    for i, text in enumerate(value):
                        if "\x00" in text:
                            out.append((f"{path}[{i}]", "must not contain NUL (\\x00) characters"))
                elif "\x00" in value:
                    out.append((path, "must not contain NUL (\\x00) characters"))
            elif kind == "map":
                self._walk_map(fd, value, path, out, maybe_nul)
            elif repeated:
                for i, item in enumerate(value):
                    self._one(kind, item, f"{path}[{i}]", out, maybe_nul)
            else:
                self._one(kind, value, path, out, maybe_nul)

    def _one(self, kind: str, value: Any, path: str, out: list, maybe_nul: bool) -> None:
        if kind == "timestamp":
            _check_timestamp(value, path, out)
        elif kind == "struct":
            self._check_struct(value, path, out, maybe_nul)
        else:
            self._walk(value, path + ".", out, maybe_nul)

    def _walk_map(self, fd: FieldDescriptor, mapping: Any, path: str, out: list, maybe_nul: bool) -> None:
        """A map's violations are the map field's (its keys are the caller's data, not field names)."""
        key_fd = fd.message_type.fields_by_name["key"]
        value_fd = fd.message_type.fields_by_name["value"]
        value_kind = self._kind(value_fd)
        for key, value in mapping.items():
            if maybe_nul and key_fd.type == _STRING and "\x00" in key:
                out.append((path, "keys must not contain NUL (\\x00) characters"))
                return
            if value_kind == "string":
                if maybe_nul and "\x00" in value:
                    out.append((path, "values must not contain NUL (\\x00) characters"))
                    return
            elif value_kind is not None:
                before = len(out)
                self._one(value_kind, value, path, out, maybe_nul)
                if len(out) > before:
                    return

    def _check_struct(self, value: Any, path: str, out: list, maybe_nul: bool) -> None:
        """A Struct, Value or ListValue: bounded in bytes and depth, NUL-free."""
        size = value.ByteSize()
        if size > self.struct_bytes:
            out.append((path, f"at most {self.struct_bytes:,} bytes serialized (this is {size:,})"))
            return
        depth, nul = _struct_shape(value, maybe_nul, self.struct_depth + 1)
        if depth > self.struct_depth:
            out.append((path, f"nested at most {self.struct_depth} levels deep"))
        if nul:
            out.append((path, "must not contain NUL (\\x00) characters"))

    # -- plans
    def _kind(self, fd: FieldDescriptor) -> str | None:
        if fd.type == _STRING:
            return "string"
        if fd.type != _MESSAGE:
            return None
        if fd.message_type.GetOptions().map_entry:
            return "map"
        name = fd.message_type.full_name
        if name == _TIMESTAMP:
            return "timestamp"
        if name in _STRUCTS:
            return "struct"
        return "message"

    def _plan(self, descriptor: Descriptor) -> _Plan:
        plan = self._plans.get(descriptor.full_name)
        if plan is None:
            kinds = {}
            special = []
            for fd in descriptor.fields:
                kind = self._kind(fd)
                if kind is None:
                    continue
                kinds[fd.name] = (kind, fd.is_repeated)
                if kind in ("timestamp", "struct") or (
                    kind in ("message", "map") and self._reaches_special(fd.message_type)
                ):
                    special.append((fd.name, fd.is_repeated, kind, fd))
            plan = self._plans[descriptor.full_name] = _Plan(kinds, tuple(special))
        return plan

    def _reaches_special(self, descriptor: Descriptor) -> bool:
        """Whether a message of this type can hold a Timestamp or a Struct, at any depth."""
        name = descriptor.full_name
        if name in self._reaches:
            return self._reaches[name]
        # Every type reachable from here, then: any of them a Timestamp or Struct?
        seen: dict[str, Descriptor] = {}
        stack = [descriptor]
        while stack:
            d = stack.pop()
            if d.full_name in seen:
                continue
            seen[d.full_name] = d
            for fd in d.fields:
                if fd.type == _MESSAGE:
                    stack.append(fd.message_type)
        found = any(n == _TIMESTAMP or n in _STRUCTS for n in seen if n != name) or name in (_TIMESTAMP, *_STRUCTS)
        self._reaches[name] = found
        return found


def _check_timestamp(ts: Any, path: str, out: list) -> None:
    if not MIN_SECONDS <= ts.seconds <= MAX_SECONDS:
        out.append((f"{path}.seconds", "must be within 0001-01-01T00:00:00Z..9999-12-31T23:59:59Z"))
    if not 0 <= ts.nanos <= MAX_NANOS:
        out.append((f"{path}.nanos", f"must be within 0..{MAX_NANOS:,}"))


def _struct_shape(value: Any, maybe_nul: bool, stop_at: int) -> tuple[int, bool]:
    """(nesting depth, any NUL in a key or text) of a Struct / Value / ListValue.

    A Struct or a list is one level; ``{"a": 1}`` is 1 deep, ``{"a": {"b": [1]}}`` 3. The
    walk does not go below ``stop_at`` levels.
    """
    deepest = 0
    nul = False
    name = value.DESCRIPTOR.full_name
    # (node, its depth): a Struct/ListValue node at depth d holds values at depth d.
    stack = [(value, 1 if name in (_STRUCT, _LIST_VALUE) else 0)]
    while stack:
        node, depth = stack.pop()
        kind_name = node.DESCRIPTOR.full_name
        if kind_name == _VALUE:
            kind = node.WhichOneof("kind")
            if kind == "struct_value":
                stack.append((node.struct_value, depth + 1))
            elif kind == "list_value":
                stack.append((node.list_value, depth + 1))
            elif kind == "string_value" and maybe_nul and "\x00" in node.string_value:
                nul = True
            continue
        deepest = max(deepest, depth)
        if depth >= stop_at:
            continue
        if kind_name == _STRUCT:
            for key, item in node.fields.items():
                if maybe_nul and "\x00" in key:
                    nul = True
                stack.append((item, depth))
        else:  # ListValue
            for item in node.values:
                stack.append((item, depth))
    return deepest, nul


def struct_depth(value: Any) -> int:
    """Nesting depth of a Struct (see ``_struct_shape``)."""
    return _struct_shape(value, False, 1 << 30)[0]
