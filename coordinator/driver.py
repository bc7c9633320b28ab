"""One saga's driver: performs what the state machine (``coordinator.machine``) decides.

A driver runs a saga from its saved state to a terminal status, or until its replica loses
the lease: every save is guarded by the owner, so a replica that lost it stops at its next
save. Steps are re-driven from the last saved state after a crash; participants' barriers
make the repeated calls harmless. The machine decides; the driver calls participants (through
``coordinator.participants``), writes (through the store's group writer) and counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import grpc

from coordinator.lifecycle import now_ts
from coordinator.commands import TERMINAL_STATUSES, Call, Compensate, Finished, Save
from coordinator.machine import SagaMachine
from coordinator.registry import definition_of
from coordinator.store import now_ms
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime import telemetry
from invsaga.runtime.errors import RpcFailure
from invsaga.runtime.logs import log_context
from invsaga.runtime.retry import DeadlineReached, planned

if TYPE_CHECKING:
    from coordinator.engine import Engine

log = logging.getLogger("invsaga.coordinator")

# How long the events of a step that only read may wait to go out with the next step's save.
SAVE_DELAY = 0.01


class LeaseLost(Exception):
    pass


class Driver:
    """Drives one saga from its saved state to a terminal status (or until the lease is lost)."""

    def __init__(self, engine: "Engine", row, recovered: bool = True) -> None:
        self.engine = engine
        self.machine = SagaMachine(
            definition_of(row.saga),
            row.saga,
            row.last_seq,
            row.deadline,
            engine.settings,
            recovered=recovered,
            previous_status=row.claimed_from or None,
        )
        self.saga: pb.Saga = row.saga
        self.cancel = row.cancel_requested
        self.cancel_reason = ""  # as CancelSaga was told it, when asked of this replica
        self.inflight: list[asyncio.Future] = []  # saves under way, oldest first
        self.flush: asyncio.TimerHandle | None = None  # a deferred save not yet queued
        # A saga started here: its insert may still be committing (see ``confirm_created``).
        self.created: asyncio.Future | None = row.created
        self.reported = False

    # -- the saga ----------------------------------------------------------------------
    async def run(self) -> None:
        machine = self.machine
        save = machine.begin()
        if self.saga.status in TERMINAL_STATUSES:  # nothing to drive (it ended meanwhile)
            return
        while True:
            await self.persist(save)
            if self.cancel and machine.wants_cancel_reason:
                machine.cancel(self.cancel_reason or await self.engine.journal.cancel_reason(self.saga.saga_id))
            command = machine.next(now_ms())
            self.report()
            await self.persist(command.save)
            if isinstance(command, Finished):
                return
            if isinstance(command, Call):
                save = await self.call(command)
            else:
                save = await self.compensate(command)
            self.report()

    def report(self) -> None:
        """Count the saga's outcome once, before its terminal save lands."""
        if self.saga.status in TERMINAL_STATUSES and not self.reported:
            self.reported = True
            self.engine.metrics_outcome(self.saga)

    async def call(self, call: Call) -> Save:
        saga, step = self.saga, call.step
        if saga.saga_id in self.engine.abandoned:
            raise LeaseLost(saga.saga_id)
        if call.effect:
            await self.confirm_created()
        started = time.monotonic()
        with (
            log_context(saga_id=saga.saga_id, step=step.name),
            telemetry.step_span(f"saga.{step.name}", saga.saga_id, step.name),
        ):
            try:
                participants = self.engine.participants
                deadline = time.monotonic() + (self.machine.deadline_ms / 1000.0 - time.time())
                with planned(call.policy, deadline, self.observer(call)):
                    response = await participants.execute[step.service](
                        participants.execute_request(saga, step, call.payload), timeout=call.timeout
                    )
            except DeadlineReached:
                save = self.machine.timed_out(call)
            except grpc.RpcError as error:
                save = self.machine.failed(call, RpcFailure.from_error(error), now_ms())
            else:
                save = self.machine.answered(call, getattr(response, step.key))
        ok = saga.steps[call.index].status == pb.STEP_STATUS_SUCCEEDED
        self.engine.observe_step(step, "succeeded" if ok else "failed", time.monotonic() - started)
        return save

    async def compensate(self, command: Compensate) -> Save:
        """Each attempt under a fresh deadline of its own (never the saga's expired one)."""
        saga, step = self.saga, command.step
        try:
            with (
                log_context(saga_id=saga.saga_id, step=step.name),
                telemetry.step_span(f"saga.{step.name}.compensate", saga.saga_id, step.name),
            ):
                # Transient faults are retried until the compensation's own deadline (a
                # participant restarting); then the saga is parked FAILED for ResumeSaga.
                participants = self.engine.participants
                with planned(command.policy, time.monotonic() + command.timeout, self.observer(command)):
                    response = await participants.stubs[step.service].Compensate(
                        participants.compensate_request(saga, step), timeout=command.timeout
                    )
        except DeadlineReached:
            failure = RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "compensation did not finish within its deadline")
            save = self.machine.compensation_failed(command, failure)
        except grpc.RpcError as error:
            save = self.machine.compensation_failed(command, RpcFailure.from_error(error))
        else:
            save = self.machine.compensated(command, response.null_compensation)
            if saga.steps[command.index].status == pb.STEP_STATUS_COMPENSATED:
                self.engine.observe_compensation(step)
        return save

    def observer(self, command: Call | Compensate):
        def observe(attempt: int, error: grpc.RpcError, will_retry: bool, delay: float) -> None:
            if isinstance(command, Call):
                self.engine.observe_retry(command.step, error, will_retry)
            self.machine.retrying(command, error.code().name, error.details() or "", attempt, will_retry)

        return observe

    # -- persistence -------------------------------------------------------------------
    async def persist(self, save: Save) -> None:
        """Write the state as ``save`` asks.

        Saves are pipelined: the next step's call overlaps this write, and its result (lease
        still held, cancel requested) is read before the next save. Recovery never needs the
        write to have landed — a re-driven step gets its first result from the barrier, and a
        step that may have been sent is fenced off — so only the terminal save, and the one
        that starts a rollback, are awaited.
        """
        if save == Save.NONE:
            return
        if save == Save.SOON:
            self.save_soon()
            return
        self.cancel_flush()
        await self.settle()
        self.queue_save()
        if save == Save.AWAIT:
            await self.settle()

    def queue_save(self) -> None:
        self.saga.updated_at.CopyFrom(now_ts())
        participants = self.engine.participants
        notices = [
            (step.step, participants.execute_request(self.saga, step, payload).SerializeToString())
            for step, payload in self.machine.take_owed()
        ]
        saved = self.engine.journal.save(
            self.saga, self.machine.take_events(), owner=self.engine.owner, notices=notices
        )
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
        if not self.machine.events:
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
