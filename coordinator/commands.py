"""What the state machine produces: commands for its driver (and how durable the state must be
first), and events for watchers."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from coordinator.definition import SagaDefinition, StepDef
from coordinator.lifecycle import now_ts
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.retry import RetryPolicy


class Save(enum.IntEnum):
    """What the state so far needs before the next command goes."""

    NONE = 0  # nothing yet: its events go out with a later save
    SOON = 1  # a read-only step's events: with the next save, or shortly (watchers only)
    QUEUE = 2  # written now, pipelined: the next call overlaps the write
    AWAIT = 3  # written, and landed, before anything else happens


@dataclass(frozen=True)
class Call:
    """Send step ``index``'s Execute with ``payload`` (its ExecuteRequest oneof field)."""

    index: int
    step: StepDef
    payload: Any
    timeout: float  # each attempt's
    policy: RetryPolicy
    save: Save = Save.NONE

    @property
    def effect(self) -> bool:
        """The step may change something at its participant."""
        return self.step.compensable


@dataclass(frozen=True)
class Compensate:
    """Send step ``index``'s Compensate, each attempt under ``timeout``, within ``timeout`` in all."""

    index: int
    step: StepDef
    timeout: float
    policy: RetryPolicy
    fence: bool  # the step is PENDING but a crashed driver may have sent it
    failed: bool  # the step failed: the call only fences off a late Execute
    save: Save = Save.NONE


@dataclass(frozen=True)
class Finished:
    status: int
    save: Save = Save.NONE


Command = Call | Compensate | Finished


TERMINAL_EVENTS = (
    pb.SAGA_EVENT_TYPE_SAGA_COMPLETED,
    pb.SAGA_EVENT_TYPE_SAGA_COMPENSATED,
    pb.SAGA_EVENT_TYPE_SAGA_FAILED,
)
TERMINAL_STATUSES = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED)
# Step statuses after which a compensable step may have had an effect.
MAY_HAVE_RUN = (pb.STEP_STATUS_RUNNING, pb.STEP_STATUS_SUCCEEDED, pb.STEP_STATUS_FAILED, pb.STEP_STATUS_COMPENSATING)


def new_saga(saga_id: str, request: pb.InventoryRequest, definition: SagaDefinition) -> pb.Saga:
    saga = pb.Saga(
        saga_id=saga_id,
        request_id=request.request_id,
        status=pb.SAGA_STATUS_PENDING,
        request=request,
        kind=definition.kind,
    )
    saga.created_at.CopyFrom(now_ts())
    saga.updated_at.CopyFrom(saga.created_at)
    for step in definition.steps:
        saga.steps.add(name=step.name, status=pb.STEP_STATUS_PENDING)
    return saga


def event(saga: pb.Saga, seq: int, type_: int, step: str = "", step_status: int = 0, **detail: Any) -> pb.SagaEvent:
    return pb.SagaEvent(
        seq=seq,
        type=type_,
        step=step,
        status=saga.status,
        step_status=step_status,
        time=now_ts(),
        detail=pb.EventDetail(**detail) if detail else None,
        saga_id=saga.saga_id,
    )
