"""The saga executor of one replica: admission by priority, leases and recovery.

A saga is driven by exactly one replica at a time: the one whose id is in its ``owner``
column with an unexpired lease. Sagas queue here by urgency and priority and are driven by a
bounded number of workers (``coordinator.driver``); a recovery pass claims the sagas of
replicas whose lease expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid

import grpc

from coordinator.definition import StepDef
from coordinator.driver import Driver, LeaseLost
from coordinator.gate import SagaGate
from coordinator.hub import EventHub
from coordinator.journal import Journal
from coordinator.keeper import ReservationKeeper
from coordinator.outbox import NoticeOutbox
from coordinator.participants import Participants
from coordinator.store import SagaRow, SagaStore
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime import telemetry
from invsaga.runtime.config import Settings
from invsaga.runtime.logs import log_context
from invsaga.runtime.metrics import SagaMetrics

log = logging.getLogger("invsaga.coordinator")


class Engine:
    """Admission (priority queue, bounded concurrency), leases and recovery for one replica."""

    def __init__(self, settings: Settings, store: SagaStore, hub: EventHub, participants: Participants) -> None:
        self.settings = settings
        self.store = store
        self.participants = participants
        self.journal = Journal(store, hub, self.is_known)
        self.owner = uuid.uuid4().hex
        self.lease_ms = int(settings.lease * 1000)
        self.queue: asyncio.PriorityQueue[tuple[tuple[int, int, int], str]] = asyncio.PriorityQueue()
        self.known: set[str] = set()  # queued or being driven here
        # Queued sagas started here (their insert may still be committing): no need to read them back.
        self.fresh: dict[str, SagaRow] = {}
        self.drivers: dict[str, Driver] = {}  # being driven here
        self.abandoned: set[str] = set()  # started before their insert, which found a duplicate
        self.order = itertools.count()
        self.tasks: list[asyncio.Task] = []
        self.metrics: SagaMetrics | None = None  # set by telemetry when enabled
        # The notices sagas owe, sent until acknowledged (``coordinator.outbox``).
        self.outbox = NoticeOutbox(store.engine, participants, settings)
        # COMPLETED sagas' reservations: picklist changes in, expiries and settlements out.
        self.keeper = ReservationKeeper(store, participants, settings)
        # New sagas by the memory they hold, from StartSaga to their end (``coordinator.gate``).
        self.gate = SagaGate(settings.max_saga_bytes)
        self.keeper.outbox_wake = self.outbox.wake

    def is_known(self, saga_id: str) -> bool:
        """Queued or being driven here."""
        return saga_id in self.known

    # -- hooks for metrics (no-ops unless telemetry sets self.metrics) -------------------
    def observe_step(self, step: StepDef, outcome: str, seconds: float) -> None:
        if self.metrics:
            self.metrics.step(step.name, outcome, seconds)

    def observe_retry(self, step: StepDef, error: grpc.RpcError, will_retry: bool) -> None:
        if self.metrics and will_retry:
            self.metrics.retry(step.name, error.code().name)

    def observe_compensation(self, step: StepDef) -> None:
        if self.metrics:
            self.metrics.compensation(step.name)

    def metrics_outcome(self, saga: pb.Saga) -> None:
        if self.metrics:
            self.metrics.finished(saga)

    # -- admission ---------------------------------------------------------------------
    def enqueue(self, saga_id: str, priority: int, urgent: bool, row: SagaRow | None = None) -> None:
        """Queue a saga to be driven here; ``row`` is its state when the caller is writing it."""
        if saga_id in self.known:
            return
        self.known.add(saga_id)
        if row is not None:
            self.fresh[saga_id] = row
        self.queue.put_nowait(((0 if urgent else 1, -priority, next(self.order)), saga_id))

    async def worker(self) -> None:
        while True:
            _, saga_id = await self.queue.get()
            try:
                await self.drive(saga_id)
            except LeaseLost:
                if saga_id not in self.abandoned:
                    log.warning("lost the lease on saga %s; another replica drives it now", saga_id)
            except Exception:
                log.exception("saga %s: driver crashed; it will be recovered", saga_id)
            finally:
                self.known.discard(saga_id)
                self.abandoned.discard(saga_id)
                self.gate.release(saga_id)

    async def drive(self, saga_id: str) -> None:
        fresh = self.fresh.pop(saga_id, None)
        row = fresh or await self.store.load(saga_id)
        if row is None or row.owner != self.owner:
            return
        if self.metrics:
            self.metrics.driving(saga_id, row.saga.created_at.ToMicroseconds() / 1e6)
        driver = self.drivers[saga_id] = Driver(self, row, recovered=fresh is None)
        try:
            with telemetry.saga_trace(row.trace_context), log_context(saga_id=saga_id):
                await driver.run()
        finally:
            driver.cancel_flush()
            del self.drivers[saga_id]
            if self.metrics:
                self.metrics.done(saga_id)

    def abandon(self, saga_id: str) -> None:
        """Drop a saga whose insert was refused (its request_id belongs to another saga).

        Nothing of it was written: a queued one is skipped, a running one stops before its
        next step (its saves, guarded by the owner of a row that does not exist, change
        nothing either).
        """
        if self.fresh.pop(saga_id, None) is not None or saga_id in self.drivers:
            self.abandoned.add(saga_id)

    def cancel_local(self, saga_id: str, reason: str = "") -> None:
        """A cancel for a saga driven here takes effect at its next step, without a read."""
        driver = self.drivers.get(saga_id)
        if driver is not None:
            driver.cancel = True
            driver.cancel_reason = reason

    # -- leases and recovery -----------------------------------------------------------
    async def renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease / 3)
            with contextlib.suppress(Exception):
                await self.store.renew(self.owner, self.lease_ms)

    async def recover(self) -> None:
        while True:
            try:
                for saga_id, priority, urgent in await self.store.claim_orphans(self.owner, self.lease_ms):
                    log.info("recovering saga %s", saga_id, extra={"event": "recovered"})
                    self.enqueue(saga_id, priority, urgent)
            except Exception:
                log.exception("recovery pass failed")
            await asyncio.sleep(self.settings.recovery_interval)

    def start(self) -> None:
        self.store.start()
        self.tasks = [asyncio.create_task(self.worker()) for _ in range(self.settings.max_concurrent_sagas)]
        self.tasks.append(asyncio.create_task(self.renew_leases()))
        self.tasks.append(asyncio.create_task(self.recover()))
        self.tasks.append(asyncio.create_task(self.outbox.run()))
        self.tasks.extend(asyncio.create_task(task()) for task in self.keeper.tasks())

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.store.stop()
        with contextlib.suppress(Exception):
            await self.store.release_all(self.owner)
