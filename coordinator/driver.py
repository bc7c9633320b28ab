"""One saga's driver: the step loop, compensation, and the saves between them.

A driver runs a saga from its saved state to a terminal status, or until its replica loses
the lease: every save is guarded by the owner, so a replica that lost it stops at its next
save. Steps are re-driven from the last saved state after a crash; participants' barriers
make the repeated calls harmless.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import grpc

from coordinator import lifecycle
from coordinator.lifecycle import now_ts
from coordinator import steps as S
from coordinator.definition import NOTIFY_FAILURE, STEPS, StepDef
from coordinator.store import now_ms
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime import telemetry
from invsaga.runtime.errors import RpcFailure
from invsaga.runtime.logs import log_context
from invsaga.runtime.retry import ALL, DeadlineReached, RetryPolicy, call_with_retry, journaled

if TYPE_CHECKING:
    from coordinator.engine import Engine

log = logging.getLogger("invsaga.coordinator")

TERMINAL_EVENTS = (
    pb.SAGA_EVENT_TYPE_SAGA_COMPLETED,
    pb.SAGA_EVENT_TYPE_SAGA_COMPENSATED,
    pb.SAGA_EVENT_TYPE_SAGA_FAILED,
)
TERMINAL_STATUSES = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED)
# How long the events of a step that only read may wait to go out with the next step's save.
SAVE_DELAY = 0.01
# Step statuses after which a compensable step may have had an effect.
MAY_HAVE_RUN = (pb.STEP_STATUS_RUNNING, pb.STEP_STATUS_SUCCEEDED, pb.STEP_STATUS_FAILED, pb.STEP_STATUS_COMPENSATING)

# A failure's text is copied into the saga, its step, several events and the notice: each
# copy is bounded. A message keeps its first FAILURE_TEXT_BYTES (with a marker saying how
# long it was), a failure its first MAX_SHORTAGES shortages (with the count of all of them),
# and its step, code and reason FAILURE_LABEL_BYTES each.
FAILURE_TEXT_BYTES = 1024
FAILURE_LABEL_BYTES = 128
MAX_SHORTAGES = 20


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


class LeaseLost(Exception):
    pass


def new_saga(saga_id: str, request: pb.InventoryRequest) -> pb.Saga:
    saga = pb.Saga(saga_id=saga_id, request_id=request.request_id, status=pb.SAGA_STATUS_PENDING, request=request)
    saga.created_at.CopyFrom(now_ts())
    saga.updated_at.CopyFrom(saga.created_at)
    for step in STEPS:
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


_TRANSPORT_TEXT = {
    grpc.StatusCode.UNAVAILABLE: "participant unreachable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "participant did not answer in time",
    grpc.StatusCode.CANCELLED: "participant call cancelled",
}


class Driver:
    """Drives one saga from its saved state to a terminal status (or until the lease is lost)."""

    def __init__(self, engine: "Engine", row, recovered: bool = True) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.saga: pb.Saga = row.saga
        self.seq = row.last_seq
        self.deadline_ms = row.deadline
        self.cancel = row.cancel_requested
        self.pending: list[pb.SagaEvent] = []
        self.unsent: set[int] = set()  # steps this driver started but has not called yet
        self.inflight: list[asyncio.Future] = []  # saves under way, oldest first
        self.flush: asyncio.TimerHandle | None = None  # a deferred save not yet queued
        # A saga started here: its insert may still be committing (see ``confirm_created``).
        self.created: asyncio.Future | None = row.created
        self.previous_status = row.saga.status
        self.saga.status = row.status  # the column is the truth (Cancel/Resume update it directly)
        # Saves are pipelined, so the saved state can lag behind the calls made. A driver that
        # takes over a saga (or picks it up again from the database) therefore treats every
        # compensable step still PENDING there as possibly sent, and fences it off with a
        # Compensate if the saga rolls back.
        self.recovered = recovered
        # Notices owed (step, serialized notify ExecuteRequest): they go to the outbox with the
        # next save, the terminal one (``owe_notice``).
        self.notices: list[tuple[int, bytes]] = []
        self.cancel_reason = ""  # as CancelSaga was told it, when asked of this replica

    # -- persistence -------------------------------------------------------------------
    def emit(self, type_: int, step: str = "", step_status: int = 0, **detail: Any) -> None:
        self.seq += 1
        self.pending.append(event(self.saga, self.seq, type_, step, step_status, **detail))

    async def save(self, wait: bool = False) -> None:
        """Persist the state and events so far.

        Saves are pipelined: the next step's call overlaps this write, and its result (lease
        still held, cancel requested) is read before the next save. Recovery never needs the
        write to have landed — a re-driven step gets its first result from the barrier, and a
        step that may have been sent is fenced off (``recovered``) — so only the terminal save,
        and the one that starts a rollback, are awaited.
        """
        self.cancel_flush()
        await self.settle()
        self.queue_save()
        if wait or self.saga.status in TERMINAL_STATUSES:
            await self.settle()

    def queue_save(self) -> None:
        self.saga.updated_at.CopyFrom(now_ts())
        events, self.pending = self.pending, []
        notices, self.notices = self.notices, []
        saved = self.engine.store.save(self.saga, events, owner=self.engine.owner, notices=notices)
        if notices:
            saved.add_done_callback(lambda _: self.engine.outbox.wake())
        self.inflight.append(saved)

    def save_soon(self) -> None:
        """Save after a step that only read: with the next step's save, or ``SAVE_DELAY`` on.

        A re-driven read-only step just reads again, so recovery needs no save of it; only
        watchers do, to see the saga move on. When the next step answers within ``SAVE_DELAY``
        (as it does unless the mesh is slow) both go in one write; a slower step still shows
        as started that long after it began.
        """
        if self.flush is None:
            self.flush = asyncio.get_running_loop().call_later(SAVE_DELAY, self._flush)

    def _flush(self) -> None:
        self.flush = None
        if not self.pending:
            return
        if any(not saved.done() for saved in self.inflight):
            self.save_soon()  # one write of a saga at a time: try again once it is in
            return
        self.queue_save()  # its result is read by the next settle, like any save's

    def cancel_flush(self) -> None:
        if self.flush is not None:
            self.flush.cancel()
            self.flush = None

    async def settle(self) -> None:
        while self.inflight:
            result = await self.inflight.pop(0)
            if not result.ok:
                raise LeaseLost(self.saga.saga_id)
            self.cancel = self.cancel or result.cancel_requested

    async def confirm_created(self) -> None:
        """Before a step that changes anything: the saga's insert must have committed.

        The steps before it only read, and their saves may be deferred, so nothing else has
        yet told this driver that the insert found no other saga with the same request_id.
        """
        if self.created is None:
            return
        created, self.created = self.created, None
        try:
            other = await asyncio.shield(created)
        except Exception:  # the insert failed: there is no saga to drive
            raise LeaseLost(self.saga.saga_id) from None
        if other is not None:
            raise LeaseLost(self.saga.saga_id)

    # -- the saga ----------------------------------------------------------------------
    async def run(self) -> None:
        saga = self.saga
        status = saga.status
        if status == pb.SAGA_STATUS_COMPENSATING and self.previous_status == pb.SAGA_STATUS_FAILED:
            saga.ClearField("compensation_failure")
            self.emit(pb.SAGA_EVENT_TYPE_SAGA_RESUMED)
            await self.compensate()
            return
        if status == pb.SAGA_STATUS_COMPENSATING and self.previous_status == pb.SAGA_STATUS_COMPLETED:
            saga.failure.CopyFrom(pb.SagaFailure(reason="CANCELLED", message="reservation released by CancelSaga"))
            self.emit(pb.SAGA_EVENT_TYPE_CANCEL_REQUESTED)
            await self.compensate(announce=True)
            return
        if self.seq > 1 and status in (pb.SAGA_STATUS_RUNNING, pb.SAGA_STATUS_COMPENSATING):
            self.emit(pb.SAGA_EVENT_TYPE_SAGA_RECOVERED, message="driven on after a coordinator restart")
        if status in (pb.SAGA_STATUS_PENDING, pb.SAGA_STATUS_RUNNING):
            if await self.forward():
                return
        await self.compensate()

    async def forward(self) -> bool:
        """Run the remaining steps; True when the saga completed."""
        saga = self.saga
        first = next((i for i, st in enumerate(saga.steps) if st.status != pb.STEP_STATUS_SUCCEEDED), len(STEPS))
        if saga.status == pb.SAGA_STATUS_PENDING:
            # No save before the first step: it only reads, and a saga still PENDING after a
            # crash simply starts over. Its events go out with a later save (``save_soon``).
            saga.status = pb.SAGA_STATUS_RUNNING
            self.start_step(first)
        for i in range(first, len(STEPS)):
            step = STEPS[i]
            state = saga.steps[i]
            if saga.saga_id in self.engine.abandoned:
                raise LeaseLost(saga.saga_id)
            if self.cancel:
                # The reason CancelSaga was given: kept in the saga, its failure and its events.
                reason = self.cancel_reason or await self.engine.store.cancel_reason(saga.saga_id)
                saga.cancel_reason = clip(reason, FAILURE_LABEL_BYTES)
                message = f"cancelled by request: {saga.cancel_reason}" if reason else "cancelled by request"
                return self.fail(i, pb.SagaFailure(step=step.name, reason="CANCELLED", message=message))
            if now_ms() >= self.deadline_ms:
                return self.fail(i, self.timeout_failure(step))
            if step.compensable:
                await self.confirm_created()
            if state.status != pb.STEP_STATUS_RUNNING:
                self.start_step(i)
            self.unsent.discard(i)
            with (
                log_context(saga_id=saga.saga_id, step=step.name),
                telemetry.step_span(f"saga.{step.name}", saga.saga_id, step.name),
            ):
                outcome = await self.call_step(step, state)
            if isinstance(outcome, pb.SagaFailure):
                state.status = pb.STEP_STATUS_FAILED
                state.error = f"{outcome.code}: {outcome.message}"
                state.finished_at.CopyFrom(now_ts())
                self.emit(
                    pb.SAGA_EVENT_TYPE_STEP_FAILED,
                    step.name,
                    state.status,
                    code=outcome.code,
                    message=outcome.message,
                    reason=outcome.reason,
                    attempt=state.attempts,
                )
                if step.rolls_back:
                    return self.fail(i, outcome, emitted=True)
                if step.key == "notify":  # the confirmation could not be sent now: the outbox sends it
                    self.owe_notice(step)
            else:
                state.status = pb.STEP_STATUS_SUCCEEDED
                state.finished_at.CopyFrom(now_ts())
                self.emit(pb.SAGA_EVENT_TYPE_STEP_SUCCEEDED, step.name, state.status, attempt=state.attempts)
            if i + 1 < len(STEPS):
                self.start_step(i + 1)
            else:
                saga.status = pb.SAGA_STATUS_COMPLETED
                # The reservation starts with the saga's end: its first state comes before the
                # terminal event, so that a watcher that stops there sees it too.
                lifecycle.open_reservation(saga)
                self.seq += 1
                self.pending.append(
                    lifecycle.reservation_event(
                        saga, self.seq, pb.SAGA_EVENT_TYPE_RESERVATION_CHANGED, saga.reservation.state
                    )
                )
                self.emit(pb.SAGA_EVENT_TYPE_SAGA_COMPLETED)
                self.engine.metrics_outcome(saga)
            if step.compensable or i + 1 == len(STEPS):
                await self.save()
            else:
                self.save_soon()
        return saga.status == pb.SAGA_STATUS_COMPLETED

    def start_step(self, i: int) -> None:
        self.unsent.add(i)
        state = self.saga.steps[i]
        state.status = pb.STEP_STATUS_RUNNING
        state.started_at.CopyFrom(now_ts())
        self.emit(pb.SAGA_EVENT_TYPE_STEP_STARTED, STEPS[i].name, state.status)

    def timeout_failure(self, step: StepDef) -> pb.SagaFailure:
        return pb.SagaFailure(
            step=step.name,
            code=grpc.StatusCode.DEADLINE_EXCEEDED.name,
            reason="SAGA_TIMEOUT",
            message=f"saga timed out after {self.settings.saga.timeout:g}s",
        )

    def fail(self, i: int, failure: pb.SagaFailure, emitted: bool = False) -> bool:
        """Record why the saga rolls back at step i.

        A step that was started (it may have reached its participant) is marked FAILED and
        later fenced off by a Compensate; one never started stays PENDING and ends SKIPPED.
        """
        bounded(failure)
        state = self.saga.steps[i]
        if i in self.unsent:  # announced but never sent: nothing can have happened
            state.status = pb.STEP_STATUS_PENDING
            state.ClearField("started_at")
        elif not emitted and state.status == pb.STEP_STATUS_RUNNING:
            state.status = pb.STEP_STATUS_FAILED
            state.error = f"{failure.code or failure.reason}: {failure.message}"
            state.finished_at.CopyFrom(now_ts())
            self.emit(
                pb.SAGA_EVENT_TYPE_STEP_FAILED,
                STEPS[i].name,
                state.status,
                code=failure.code,
                message=failure.message,
                reason=failure.reason,
            )
        self.saga.failure.CopyFrom(failure)
        return False

    async def call_step(self, step: StepDef, state: pb.StepState) -> pb.SagaFailure | None:
        saga = self.saga
        retry = self.settings.saga.retry
        # A step whose failure fails the saga waits out a participant's restart; Notify does not
        # (the notice outbox delivers it once the notify service is back).
        policy = RetryPolicy(
            retry.max_attempts,
            retry.initial_interval,
            retry.max_interval,
            step.retryable,
            transient_until_deadline=step.rolls_back,
        )

        def observe(attempt: int, error: grpc.RpcError, will_retry: bool, delay: float) -> None:
            self.engine.observe_retry(step, error, will_retry)
            if will_retry:
                state.attempts += 1
            if will_retry and journaled(attempt, policy):  # a long outage: a few events, not hundreds
                self.emit(
                    pb.SAGA_EVENT_TYPE_STEP_RETRYING,
                    step.name,
                    state.status,
                    code=error.code().name,
                    message=clip(error.details() or ""),
                    attempt=attempt,
                )

        state.attempts += 1
        request = S.execute_request(step, saga, self.settings)
        execute = self.engine.participants.execute[step.service]
        started = time.monotonic()
        try:
            response = await call_with_retry(
                execute,
                request,
                timeout=self.settings.step_timeout(step.key),
                policy=policy,
                deadline=S.monotonic_deadline(self.deadline_ms),
                observer=observe,
            )
        except DeadlineReached:
            self.engine.observe_step(step, "failed", time.monotonic() - started)
            return self.timeout_failure(step)
        except grpc.RpcError as error:
            self.engine.observe_step(step, "failed", time.monotonic() - started)
            failure = RpcFailure.from_error(error)
            timed_out = now_ms() >= self.deadline_ms
            return failure_from_error(step, failure, timed_out)
        try:
            S.apply_result(step, saga, response)
        except S.BusinessFailure as business:
            self.engine.observe_step(step, "failed", time.monotonic() - started)
            # The answer's shortage list is kept with the saga too: bounded like the failure's.
            del saga.availability.shortages[MAX_SHORTAGES:]
            return bounded(business.failure)
        self.engine.observe_step(step, "succeeded", time.monotonic() - started)
        return None

    async def compensate(self, announce: bool = False) -> None:
        saga = self.saga
        if announce or saga.status != pb.SAGA_STATUS_COMPENSATING:
            saga.status = pb.SAGA_STATUS_COMPENSATING
            self.emit(
                pb.SAGA_EVENT_TYPE_COMPENSATION_STARTED,
                saga.failure.step,
                reason=saga.failure.reason,
                code=saga.failure.code,
                message=saga.failure.message,
            )
            # Awaited: once a Compensate has run, a driver that takes over after a crash must
            # know the saga is rolling back. Otherwise it would re-drive the failed step, get
            # the first result of an effect since undone, and complete the saga without it.
            await self.save(wait=True)
        comp = self.settings.saga.compensation
        policy = RetryPolicy(
            comp.retry_attempts, self.settings.saga.retry.initial_interval, self.settings.saga.retry.max_interval, ALL
        )
        for i in reversed(range(len(STEPS))):
            step, state = STEPS[i], saga.steps[i]
            if self.recovered and step.compensable and state.status == pb.STEP_STATUS_PENDING:
                if not await self.fence(step, state, policy, comp.timeout):
                    return
                continue
            if not step.compensable or state.status not in MAY_HAVE_RUN:
                continue
            failed_step = state.status == pb.STEP_STATUS_FAILED
            if not failed_step:
                state.status = pb.STEP_STATUS_COMPENSATING
                self.emit(pb.SAGA_EVENT_TYPE_STEP_COMPENSATING, step.name, state.status)
            error, _ = await self.call_compensate(step, state, policy, comp.timeout)
            if error is not None:
                await self.compensation_failed(step, state, error)
                return
            # A step that failed had no effect to undo; the call only fences off a late Execute.
            if not failed_step:
                state.status = pb.STEP_STATUS_COMPENSATED
                self.engine.observe_compensation(step)
                self.emit(pb.SAGA_EVENT_TYPE_STEP_COMPENSATED, step.name, state.status)
                await self.save()
        for step, state in zip(STEPS, saga.steps):
            if state.status == pb.STEP_STATUS_PENDING:
                state.status = pb.STEP_STATUS_SKIPPED
                self.emit(pb.SAGA_EVENT_TYPE_STEP_SKIPPED, step.name, state.status)
        saga.status = pb.SAGA_STATUS_COMPENSATED
        await self.notify_failure()
        self.emit(
            pb.SAGA_EVENT_TYPE_SAGA_COMPENSATED,
            saga.failure.step,
            reason=saga.failure.reason,
            code=saga.failure.code,
            message=saga.failure.message,
        )
        self.engine.metrics_outcome(saga)
        await self.save()

    async def compensation_failed(self, step: StepDef, state: pb.StepState, error: RpcFailure) -> None:
        saga = self.saga
        message = clip(error.message)
        state.error = f"compensation: {error.code.name}: {message}"
        saga.compensation_failure.CopyFrom(
            pb.SagaFailure(step=step.name, code=error.code.name, reason="COMPENSATION_FAILED", message=message)
        )
        saga.status = pb.SAGA_STATUS_FAILED
        await self.notify_failure()
        self.emit(
            pb.SAGA_EVENT_TYPE_SAGA_FAILED,
            step.name,
            state.status,
            code=error.code.name,
            message=message,
            reason="COMPENSATION_FAILED",
        )
        self.engine.metrics_outcome(saga)
        await self.save()

    async def fence(self, step: StepDef, state: pb.StepState, policy: RetryPolicy, timeout: float) -> bool:
        """Compensate a step that a crashed driver may have sent; False if the saga is now FAILED.

        A null compensation (it never ran) leaves the step PENDING, to end SKIPPED.
        """
        error, response = await self.call_compensate(step, state, policy, timeout)
        if error is not None:
            await self.compensation_failed(step, state, error)
            return False
        if not response.null_compensation:
            state.status = pb.STEP_STATUS_COMPENSATED
            self.engine.observe_compensation(step)
            self.emit(pb.SAGA_EVENT_TYPE_STEP_COMPENSATED, step.name, state.status)
            await self.save()
        return True

    async def call_compensate(
        self, step: StepDef, state: pb.StepState, policy: RetryPolicy, timeout: float
    ) -> tuple[RpcFailure | None, Any]:
        """Each attempt under a fresh deadline of its own (never the saga's expired one)."""

        def observe(attempt: int, error: grpc.RpcError, will_retry: bool, delay: float) -> None:
            state.compensation_attempts += 1
            if will_retry and journaled(attempt, policy):
                self.emit(
                    pb.SAGA_EVENT_TYPE_STEP_RETRYING,
                    step.name,
                    state.status,
                    code=error.code().name,
                    message=clip(error.details() or ""),
                    attempt=attempt,
                )

        stub = self.engine.participants.stubs[step.service]
        try:
            with (
                log_context(saga_id=self.saga.saga_id, step=step.name),
                telemetry.step_span(f"saga.{step.name}.compensate", self.saga.saga_id, step.name),
            ):
                # Transient faults are retried until the compensation's own deadline (a
                # participant restarting); then the saga is parked FAILED for ResumeSaga.
                response = await call_with_retry(
                    stub.Compensate,
                    S.compensate_request(step, self.saga),
                    timeout=timeout,
                    policy=policy,
                    deadline=time.monotonic() + timeout,
                    observer=observe,
                )
        except DeadlineReached:
            return RpcFailure(
                grpc.StatusCode.DEADLINE_EXCEEDED, "compensation did not finish within its deadline"
            ), None
        except grpc.RpcError as error:
            return RpcFailure.from_error(error), None
        state.compensation_attempts += 1
        return None, response

    async def notify_failure(self) -> None:
        """The "reservation failed" notice, owed from the terminal save on (``owe_notice``).

        Called once the saga's status is terminal, so the notice says how it ended. It never
        changes the outcome, and never waits for the notify service.
        """
        self.owe_notice(NOTIFY_FAILURE)

    def owe_notice(self, step: StepDef) -> None:
        """Owe ``step``'s notice: it goes to the outbox in the same statement as the next save
        (the terminal one), and ``coordinator.outbox`` sends it, under the step's own barrier
        key, until the notify service acknowledges it."""
        request = S.execute_request(step, self.saga, self.settings)
        self.notices = [n for n in self.notices if n[0] != step.step]
        self.notices.append((step.step, request.SerializeToString()))
