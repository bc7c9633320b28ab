"""A step's failure as the saga keeps it: bounded text, the shortages a refusal carries."""

from __future__ import annotations

import json

import grpc

from coordinator.definition import StepDef
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.errors import RpcFailure

# A failure's text is copied into the saga, its step, several events and the notice: each
# copy is bounded. A message keeps its first FAILURE_TEXT_BYTES (with a marker saying how
# long it was), a failure its first MAX_SHORTAGES shortages (with the count of all of them),
# and its step, code and reason FAILURE_LABEL_BYTES each.
FAILURE_TEXT_BYTES = 1024
FAILURE_LABEL_BYTES = 128
MAX_SHORTAGES = 20

_TRANSPORT_TEXT = {
    grpc.StatusCode.UNAVAILABLE: "participant unreachable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "participant did not answer in time",
    grpc.StatusCode.CANCELLED: "participant call cancelled",
}


def clip(text: str, limit: int = FAILURE_TEXT_BYTES) -> str:
    """``text`` within ``limit`` UTF-8 bytes; a cut one ends with a marker giving its full length."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    marker = f"… [truncated, {len(data):,} bytes]"
    head = data[: max(0, limit - len(marker.encode("utf-8")))].decode("utf-8", "ignore")
    return head + marker


def bounded(failure: pb.SagaFailure) -> pb.SagaFailure:
    """``failure`` (changed in place) with its text and shortage list bounded."""
    for name in ("step", "code", "reason"):
        setattr(failure, name, clip(getattr(failure, name), FAILURE_LABEL_BYTES))
    total = len(failure.shortages)
    if total > MAX_SHORTAGES:
        del failure.shortages[MAX_SHORTAGES:]
        note = f" [{total:,} shortages in all; the first {MAX_SHORTAGES} are kept]"
        failure.message = clip(failure.message, FAILURE_TEXT_BYTES - len(note.encode("utf-8"))) + note
    else:
        failure.message = clip(failure.message)
    return failure


def shortages_of(error: RpcFailure) -> list[common_pb2.Shortage]:
    """The shortages a participant's refusal carries (AllocateInventory's, as JSON in its
    ErrorInfo metadata ``shortages``), or none when it carries none or they do not parse."""
    raw = error.metadata.get("shortages") if error.error_info is not None else None
    if not raw:
        return []
    try:
        return [
            common_pb2.Shortage(sku=str(s["sku"]), required=int(s["required"]), available=int(s["available"]))
            for s in json.loads(raw)
        ]
    except (ValueError, TypeError, KeyError):
        return []


def failure_from_error(step: StepDef, error: RpcFailure, timed_out: bool) -> pb.SagaFailure:
    if timed_out:
        reason = "SAGA_TIMEOUT"
    elif error.reason:
        reason = error.reason
    elif error.code == grpc.StatusCode.ABORTED:
        reason = "LOCK_CONFLICT"
    else:
        reason = "STEP_FAILED"
    # A coded answer of the participant is kept as it is; the channel's own text (addresses,
    # transport internals) is not, only what it means.
    message = (
        error.message if error.error_info is not None else _TRANSPORT_TEXT.get(error.code, "participant call failed")
    )
    failure = pb.SagaFailure(step=step.name, code=error.code.name, reason=reason, message=message)
    failure.shortages.extend(shortages_of(error))
    return bounded(failure)
