"""The saga state machine: pure — no I/O, no asyncio, no clock but the one it is given.

Given a saga's state and an outcome (a step's answer, its error, a timeout, a cancel), it
changes the state, appends the events to publish, and says what to do next and whether the
new state must be durable before that goes:

    machine = SagaMachine(definition, saga, seq, deadline_ms, settings, recovered=...)
    save = machine.begin()
    while True:
        persist(save)                          # the driver's business, as each Save says
        command = machine.next(now_ms)         # Call, Compensate or Finished
        persist(command.save)
        if Finished: stop
        save = machine.answered(...) / failed(...) / compensated(...) / compensation_failed(...)

``coordinator.driver`` performs the commands; tests drive the machine directly
(tests/unit/test_machine.py). The definition (``coordinator.definition``) says what the
steps are; nothing here knows a step by name.
"""

from __future__ import annotations

import enum
from typing import Any

import grpc

from coordinator.commands import MAY_HAVE_RUN, TERMINAL_STATUSES, Call, Command, Compensate, Finished, Save, event
from coordinator.definition import BusinessFailure, SagaDefinition, StepDef
from coordinator.failures import FAILURE_LABEL_BYTES, bounded, clip, failure_from_error
from coordinator.lifecycle import now_ts
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.config import Settings
from invsaga.runtime.errors import RpcFailure
from invsaga.runtime.retry import ALL, RetryPolicy, journaled


class Phase(enum.Enum):
    FORWARD = "forward"
    COMPENSATE = "compensate"
    DONE = "done"


class SagaMachine:
    """One saga's state and what follows from each outcome (see the module's docstring)."""

    def __init__(
        self,
        definition: SagaDefinition,
        saga: pb.Saga,
        seq: int,
        deadline_ms: int,
        settings: Settings,
        *,
        recovered: bool,
        previous_status: int | None = None,
    ) -> None:
        self.definition = definition
        self.steps = definition.steps
        self.saga = saga
        self.seq = seq
        self.deadline_ms = deadline_ms
        self.settings = settings
        # Saves are pipelined, so the saved state can lag behind the calls made. A machine that
        # takes over a saga (or picks it up again from the database) therefore treats every
        # compensable step still PENDING there as possibly sent, and fences it off with a
        # Compensate if the saga rolls back.
        self.recovered = recovered
        self.previous_status = saga.status if previous_status is None else previous_status
        self.events: list[pb.SagaEvent] = []  # to publish with the next save
        self.owed: list[tuple[StepDef, Any]] = []  # notices owed to the outbox (step, payload)
        self.phase = Phase.FORWARD
        self.cursor = 0  # the step to run next (forward) or to look at next (compensation, downwards)
        self.unsent: set[int] = set()  # steps announced (STEP_STARTED) but not handed out yet
        self.cancel_reason: str | None = None  # set by ``cancel``
        # The rollback just started inside ``next``: its first command carries the awaited save.
        self.announce = False
        retry = settings.saga.retry
        comp = settings.saga.compensation
        self.compensation_policy = RetryPolicy(comp.retry_attempts, retry.initial_interval, retry.max_interval, ALL)

    # -- events and notices ------------------------------------------------------------
    def emit(self, type_: int, step: str = "", step_status: int = 0, **detail: Any) -> None:
        self.seq += 1
        self.events.append(event(self.saga, self.seq, type_, step, step_status, **detail))

    def emit_failure(self, type_: int, failure: pb.SagaFailure, step: str, step_status: int = 0, **more: Any) -> None:
        """An event carrying ``failure``'s code, reason and message."""
        self.emit(type_, step, step_status, code=failure.code, reason=failure.reason, message=failure.message, **more)

    def take_events(self) -> list[pb.SagaEvent]:
        events, self.events = self.events, []
        return events

    def take_owed(self) -> list[tuple[StepDef, Any]]:
        owed, self.owed = self.owed, []
        return owed

    def owe(self, step: StepDef) -> None:
        """Owe ``step``'s notice, built from the state as it is now (the outbox sends it)."""
        self.owed = [(s, p) for s, p in self.owed if s.step != step.step]
        self.owed.append((step, step.build(self.saga, self.settings)))

    # -- outcomes from outside the steps -----------------------------------------------
    def begin(self) -> Save:
        """Where a saga picked up (new, recovered, resumed, cancelled after COMPLETED) goes on."""
        saga, status = self.saga, self.saga.status
        if status == pb.SAGA_STATUS_COMPENSATING and self.previous_status == pb.SAGA_STATUS_FAILED:
            saga.ClearField("compensation_failure")
            self.emit(pb.SAGA_EVENT_TYPE_SAGA_RESUMED)
            return self._compensate(announce=False)
        if status == pb.SAGA_STATUS_COMPENSATING and self.previous_status == pb.SAGA_STATUS_COMPLETED:
            saga.failure.CopyFrom(pb.SagaFailure(reason="CANCELLED", message="reservation released by CancelSaga"))
            self.emit(pb.SAGA_EVENT_TYPE_CANCEL_REQUESTED)
            return self._compensate(announce=True)
        if status in TERMINAL_STATUSES:
            self.phase = Phase.DONE
            return Save.NONE
        if self.seq > 1 and status in (pb.SAGA_STATUS_RUNNING, pb.SAGA_STATUS_COMPENSATING):
            self.emit(pb.SAGA_EVENT_TYPE_SAGA_RECOVERED, message="driven on after a coordinator restart")
        if status == pb.SAGA_STATUS_COMPENSATING:
            return self._compensate(announce=False)
        first = next((i for i, st in enumerate(saga.steps) if st.status != pb.STEP_STATUS_SUCCEEDED), len(self.steps))
        self.cursor = first
        if status == pb.SAGA_STATUS_PENDING:
            # No save before the first step: it only reads, and a saga still PENDING after a
            # crash simply starts over. Its events go out with a later save.
            saga.status = pb.SAGA_STATUS_RUNNING
            if first < len(self.steps):
                self._start(first)
        return Save.NONE

    def cancel(self, reason: str) -> None:
        """CancelSaga while the saga runs forward: it rolls back before its next step."""
        if self.phase == Phase.FORWARD and self.cancel_reason is None:
            self.cancel_reason = reason

    @property
    def wants_cancel_reason(self) -> bool:
        return self.phase == Phase.FORWARD and self.cancel_reason is None

    # -- what to do next ---------------------------------------------------------------
    def next(self, now_ms: int) -> Command:
        if self.phase == Phase.FORWARD:
            return self._next_forward(now_ms)
        if self.phase == Phase.COMPENSATE:
            return self._next_compensation()
        return Finished(self.saga.status)

    def _next_forward(self, now_ms: int) -> Command:
        i = self.cursor
        if i >= len(self.steps):  # every step done (a recovered saga whose last save was lost)
            return self._complete()
        step = self.steps[i]
        if self.cancel_reason is not None:
            # The reason CancelSaga was given: kept in the saga, its failure and its events.
            reason = self.cancel_reason
            self.saga.cancel_reason = clip(reason, FAILURE_LABEL_BYTES)
            message = f"cancelled by request: {self.saga.cancel_reason}" if reason else "cancelled by request"
            self.announce = self._fail(i, pb.SagaFailure(step=step.name, reason="CANCELLED", message=message)) > 0
            return self.next(now_ms)
        if now_ms >= self.deadline_ms:
            self.announce = self._fail(i, self.timeout_failure(step)) > 0
            return self.next(now_ms)
        state = self.saga.steps[i]
        if state.status != pb.STEP_STATUS_RUNNING:
            self._start(i)
        self.unsent.discard(i)
        state.attempts += 1
        retry = self.settings.saga.retry
        # A step whose failure fails the saga waits out a participant's restart; one that does
        # not (Notify) does not (the notice outbox delivers it once its participant is back).
        policy = RetryPolicy(
            retry.max_attempts,
            retry.initial_interval,
            retry.max_interval,
            step.retryable,
            transient_until_deadline=step.rolls_back,
        )
        payload = step.build(self.saga, self.settings)
        return Call(i, step, payload, self.settings.step_timeout(step.key), policy)

    def _next_compensation(self) -> Command:
        save, self.announce = (Save.AWAIT if self.announce else Save.NONE), False
        timeout = self.settings.saga.compensation.timeout
        while self.cursor >= 0:
            i = self.cursor
            self.cursor -= 1
            step, state = self.steps[i], self.saga.steps[i]
            if self.recovered and step.compensable and state.status == pb.STEP_STATUS_PENDING:
                return Compensate(i, step, timeout, self.compensation_policy, fence=True, failed=False, save=save)
            if not step.compensable or state.status not in MAY_HAVE_RUN:
                continue
            failed = state.status == pb.STEP_STATUS_FAILED
            if not failed:
                state.status = pb.STEP_STATUS_COMPENSATING
                self.emit(pb.SAGA_EVENT_TYPE_STEP_COMPENSATING, step.name, state.status)
            return Compensate(i, step, timeout, self.compensation_policy, fence=False, failed=failed, save=save)
        saga = self.saga
        for step, state in zip(self.steps, saga.steps):
            if state.status == pb.STEP_STATUS_PENDING:
                state.status = pb.STEP_STATUS_SKIPPED
                self.emit(pb.SAGA_EVENT_TYPE_STEP_SKIPPED, step.name, state.status)
        saga.status = pb.SAGA_STATUS_COMPENSATED
        self._owe_failure_notice()
        self.emit_failure(pb.SAGA_EVENT_TYPE_SAGA_COMPENSATED, saga.failure, saga.failure.step)
        self.phase = Phase.DONE
        return Finished(saga.status, Save.AWAIT)

    # -- a step's outcome --------------------------------------------------------------
    def answered(self, call: Call, payload: Any) -> Save:
        """The step's participant answered; its answer may still end the saga."""
        try:
            call.step.apply(self.saga, payload)
        except BusinessFailure as business:
            business.failure.step = business.failure.step or call.step.name
            return self._step_failed(call, bounded(business.failure))
        state = self.saga.steps[call.index]
        state.status = pb.STEP_STATUS_SUCCEEDED
        state.finished_at.CopyFrom(now_ts())
        self.emit(pb.SAGA_EVENT_TYPE_STEP_SUCCEEDED, call.step.name, state.status, attempt=state.attempts)
        return self._advance(call)

    def failed(self, call: Call, error: RpcFailure, now_ms: int) -> Save:
        """The call failed for good (the retries it was allowed are spent)."""
        return self._step_failed(call, failure_from_error(call.step, error, now_ms >= self.deadline_ms))

    def timed_out(self, call: Call) -> Save:
        """The saga's deadline passed while the step was being retried."""
        return self._step_failed(call, self.timeout_failure(call.step))

    def retrying(self, command: Call | Compensate, code: str, message: str, attempt: int, will_retry: bool) -> None:
        """An attempt failed; a long outage adds a few events (attempts 1-3, then 4, 8, 16...)."""
        state = self.saga.steps[command.index]
        if isinstance(command, Compensate):
            state.compensation_attempts += 1
        elif will_retry:
            state.attempts += 1
        if will_retry and journaled(attempt, command.policy):
            self.emit(
                pb.SAGA_EVENT_TYPE_STEP_RETRYING,
                command.step.name,
                state.status,
                code=code,
                message=clip(message),
                attempt=attempt,
            )

    def compensated(self, command: Compensate, null_compensation: bool) -> Save:
        state = self.saga.steps[command.index]
        state.compensation_attempts += 1
        if command.failed or (command.fence and null_compensation):
            # A failed step had no effect to undo; a fenced one never ran: it stays PENDING, to end SKIPPED.
            return Save.NONE
        state.status = pb.STEP_STATUS_COMPENSATED
        self.emit(pb.SAGA_EVENT_TYPE_STEP_COMPENSATED, command.step.name, state.status)
        return Save.QUEUE

    def compensation_failed(self, command: Compensate, error: RpcFailure) -> Save:
        """A Compensate failed for good: the saga is parked FAILED, for ResumeSaga."""
        saga, step = self.saga, command.step
        state = saga.steps[command.index]
        message = clip(error.message)
        state.error = f"compensation: {error.code.name}: {message}"
        saga.compensation_failure.CopyFrom(
            pb.SagaFailure(step=step.name, code=error.code.name, reason="COMPENSATION_FAILED", message=message)
        )
        saga.status = pb.SAGA_STATUS_FAILED
        self._owe_failure_notice()
        self.emit_failure(pb.SAGA_EVENT_TYPE_SAGA_FAILED, saga.compensation_failure, step.name, state.status)
        self.phase = Phase.DONE
        return Save.AWAIT

    # -- inside ------------------------------------------------------------------------
    def timeout_failure(self, step: StepDef) -> pb.SagaFailure:
        return pb.SagaFailure(
            step=step.name,
            code=grpc.StatusCode.DEADLINE_EXCEEDED.name,
            reason="SAGA_TIMEOUT",
            message=f"saga timed out after {self.settings.saga.timeout:g}s",
        )

    def _start(self, i: int) -> None:
        self.unsent.add(i)
        state = self.saga.steps[i]
        state.status = pb.STEP_STATUS_RUNNING
        state.started_at.CopyFrom(now_ts())
        self.emit(pb.SAGA_EVENT_TYPE_STEP_STARTED, self.steps[i].name, state.status)

    def _step_failed(self, call: Call, failure: pb.SagaFailure) -> Save:
        state = self.saga.steps[call.index]
        state.status = pb.STEP_STATUS_FAILED
        state.error = f"{failure.code}: {failure.message}"
        state.finished_at.CopyFrom(now_ts())
        self.emit_failure(pb.SAGA_EVENT_TYPE_STEP_FAILED, failure, call.step.name, state.status, attempt=state.attempts)
        if call.step.rolls_back:
            self.saga.failure.CopyFrom(failure)
            return self._compensate(announce=True)
        if call.step.owed_on_failure:  # it could not be done now: the outbox does it
            self.owe(call.step)
        return self._advance(call)

    def _advance(self, call: Call) -> Save:
        """After step ``call.index`` ended without rolling back: start the next, or complete."""
        i = call.index + 1
        self.cursor = i
        if i < len(self.steps):
            self._start(i)
            return Save.QUEUE if call.step.compensable else Save.SOON
        self._complete()
        return Save.AWAIT

    def _complete(self) -> Finished:
        saga = self.saga
        saga.status = pb.SAGA_STATUS_COMPLETED
        if self.definition.on_completed is not None:
            for ev in self.definition.on_completed(saga, self.seq + 1):
                self.seq = ev.seq
                self.events.append(ev)
        self.emit(pb.SAGA_EVENT_TYPE_SAGA_COMPLETED)
        self.phase = Phase.DONE
        return Finished(saga.status, Save.AWAIT)

    def _fail(self, i: int, failure: pb.SagaFailure) -> Save:
        """The saga rolls back at step i (a cancel or the saga's deadline, between steps).

        A step that was started (it may have reached its participant) is marked FAILED and
        later fenced off by a Compensate; one never started stays PENDING and ends SKIPPED.
        """
        bounded(failure)
        state = self.saga.steps[i]
        if i in self.unsent:  # announced but never sent: nothing can have happened
            state.status = pb.STEP_STATUS_PENDING
            state.ClearField("started_at")
        elif state.status == pb.STEP_STATUS_RUNNING:
            state.status = pb.STEP_STATUS_FAILED
            state.error = f"{failure.code or failure.reason}: {failure.message}"
            state.finished_at.CopyFrom(now_ts())
            self.emit_failure(pb.SAGA_EVENT_TYPE_STEP_FAILED, failure, self.steps[i].name, state.status)
        self.saga.failure.CopyFrom(failure)
        return self._compensate(announce=True)

    def _compensate(self, announce: bool) -> Save:
        saga = self.saga
        self.phase = Phase.COMPENSATE
        self.cursor = len(self.steps) - 1
        if announce or saga.status != pb.SAGA_STATUS_COMPENSATING:
            saga.status = pb.SAGA_STATUS_COMPENSATING
            self.emit_failure(pb.SAGA_EVENT_TYPE_COMPENSATION_STARTED, saga.failure, saga.failure.step)
            # Awaited: once a Compensate has run, a driver that takes over after a crash must
            # know the saga is rolling back. Otherwise it would re-drive the failed step, get
            # the first result of an effect since undone, and complete the saga without it.
            return Save.AWAIT
        return Save.NONE

    def _owe_failure_notice(self) -> None:
        """The "reservation failed" notice, owed from the terminal save on: built once the
        status is terminal, so it says how the saga ended; it never changes the outcome."""
        if self.definition.failure_notice is not None:
            self.owe(self.definition.failure_notice)
