"""Saga definitions as data: what a saga's steps are, where each runs, and how each behaves.

The engine (``coordinator.machine``, ``coordinator.driver``) knows no step by name: it runs
whatever definition a saga names. A step is one ``StepDef`` entry — its participant, the
request it sends (``build``), what the saga keeps of the answer (``apply``), its timeout
and retry class, whether its failure rolls the saga back and whether it is compensated.
Adding a step is one entry here and its participant's Execute/Compensate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import grpc

from invsaga.common.v1 import common_pb2
from invsaga.runtime.retry import ALL

if TYPE_CHECKING:
    from invsaga.coordinator.v1 import coordinator_pb2 as pb
    from invsaga.runtime.config import Settings

# Build a step's payload (the ExecuteRequest oneof field's message) from the saga so far.
Build = Callable[["pb.Saga", "Settings"], Any]
# Keep what later steps need of the answer's payload; raise ``BusinessFailure`` to roll back.
Apply = Callable[["pb.Saga", Any], None]
# The events a completed saga publishes right before SAGA_COMPLETED (its after-life opening).
OnCompleted = Callable[["pb.Saga", int], list]


class BusinessFailure(Exception):
    """A step answered, and the answer means the saga cannot go on (not retried)."""

    def __init__(self, failure: "pb.SagaFailure") -> None:
        super().__init__(failure.message)
        self.failure = failure


def replacing(field: str) -> Apply:
    """An ``apply`` that keeps the answer's repeated ``field`` in the saga's field of that name."""

    def apply(saga: "pb.Saga", payload: Any) -> None:
        kept = getattr(saga, field)
        del kept[:]
        kept.extend(getattr(payload, field))

    return apply


@dataclass(frozen=True)
class StepDef:
    name: str  # as StepState.name shows it
    key: str  # its configuration key (steps.<key>.timeout) and the ExecuteRequest oneof field
    service: str  # the process hosting it
    step: int  # common.v1.SagaStep value, the barrier key
    compensable: bool
    retryable: frozenset[grpc.StatusCode]
    build: Build
    apply: Apply = lambda saga, payload: None  # keeps nothing
    rolls_back: bool = True  # False: its failure does not roll the saga back
    # True: when it fails, its request is owed to the notice outbox, which delivers it later.
    owed_on_failure: bool = False


def notice_steps(notice: Callable[["pb.Saga", bool], Any]) -> tuple[StepDef, StepDef]:
    """A saga's Notify step and its failure notice, whose texts ``notice(saga, confirmed)``
    builds. Notify's failure does not roll the saga back: the notice is owed to the outbox; the
    failure notice always goes through the outbox."""

    def confirmation(saga: "pb.Saga", settings: "Settings") -> Any:
        return notice(saga, True)

    def failure(saga: "pb.Saga", settings: "Settings") -> Any:
        return notice(saga, False)

    notify = StepDef(
        "Notify",
        "notify",
        "notify",
        common_pb2.SAGA_STEP_NOTIFY,
        False,
        ALL,
        confirmation,
        rolls_back=False,
        owed_on_failure=True,
    )
    notify_failure = StepDef(
        "NotifyFailure", "notify", "notify", common_pb2.SAGA_STEP_NOTIFY_FAILURE, False, ALL, failure, rolls_back=False
    )
    return notify, notify_failure


@dataclass(frozen=True)
class SagaDefinition:
    name: str
    steps: tuple[StepDef, ...]
    # The notice owed when the saga ends rolled back or FAILED (sent through the outbox).
    failure_notice: StepDef | None = None
    on_completed: OnCompleted | None = None
    kind: int = 0  # coordinator.v1.SagaKind: how sagas of this definition are told apart
    index: dict[str, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {s.name: i for i, s in enumerate(self.steps)})
