"""The reservation keeper: picklist changes in, releases, expiries and settlements out (SPEC §9).

How the coordinator learns of picking. The logistics service records every picklist status
change in the same transaction as the change (``picklist_changes``); the keeper reads those it
has not acknowledged, applies them to their sagas, and only then acknowledges them. Applying
is idempotent (a warehouse's state only moves forward, and an event is written only when a
state changes), so a change read twice, or by two replicas, changes the saga once; a change
whose acknowledgement was lost is read again. Nothing is lost while the coordinator is down:
the changes wait at logistics.

Releasing (CancelSaga of a COMPLETED saga, and expiry) goes through logistics: one call cancels
the saga's PENDING picklists in one transaction, each releasing its locks, and refuses if
``all_or_nothing`` and a picker already started one (``PICKING_STARTED``). A picklist that
started is never released from under its picker. Before that call the saga records what the
release is (``releasing``: RELEASED or EXPIRED), so a cancelled picklist seen first through the
feed ends in the right state.

Expiry is one path: the sweep finds reservations whose time has run out (``reservation_expires_at``)
and releases their unpicked warehouses as EXPIRED. When a reservation ends, its allocation is
settled (FULFILLED, CANCELLED or EXPIRED: the allocation service counts expiries) and one
notice goes to the outbox with the state, under the saga's one reservation-notice key (so at
most one, and none for a fulfilled order).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Iterable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.reservations import Reservations
from coordinator.lifecycle import (
    ENDED,
    EXPIRED,
    OPEN,
    RELEASED,
    RESERVED,
    apply_picklist,
    ms,
    settle_status,
    state_name,
)
from coordinator.notices import clip_text
from invsaga.allocation.v1 import allocation_pb2, allocation_pb2_grpc
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.logistics.v1 import logistics_pb2, logistics_pb2_grpc
from invsaga.runtime.errors import FailedPrecondition, NotFound, RpcFailure

if TYPE_CHECKING:
    from coordinator.participants import Participants
    from coordinator.store import SagaStore
    from invsaga.runtime.config import Settings

log = logging.getLogger("invsaga.coordinator.lifecycle")

# How often the keeper reads logistics' picklist changes, and how many at a time.
FEED_INTERVAL = 0.2
FEED_BATCH = 500
CALL_TIMEOUT = 10.0


# -- the state, stored ------------------------------------------------------------------------


class ReservationKeeper:
    """Follows COMPLETED sagas' reservations: picklist changes in, expiries and settlements out."""

    def __init__(self, store: "SagaStore", participants: "Participants", settings: "Settings") -> None:
        self.reservations = Reservations(store)
        self.store = store
        self.logistics = logistics_pb2_grpc.LogisticsServiceStub(participants.channels["logistics"])
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(participants.channels["inventory"])
        self.allocation = allocation_pb2_grpc.AllocationServiceStub(participants.channels["allocation"])
        self.sweep_interval = settings.reservation_sweep_interval
        self.outbox_wake: Callable[[], None] = lambda: None

    # -- picklist changes --------------------------------------------------------------------
    async def follow_picklists(self) -> None:
        backoff = FEED_INTERVAL
        while True:
            try:
                n = await self.read_changes()
                backoff = FEED_INTERVAL
                if n >= FEED_BATCH:
                    continue
            except grpc.aio.AioRpcError as err:
                log.debug("picklist changes not read (%s); retrying", err.code().name)
                backoff = min(2.0, backoff * 2)
            except Exception:
                log.exception("applying picklist changes failed; retrying")
                backoff = min(2.0, backoff * 2)
            await asyncio.sleep(backoff)

    async def read_changes(self) -> int:
        """Read, apply and acknowledge one batch of picklist changes; how many there were."""
        answer = await self.logistics.ListPicklistChanges(
            logistics_pb2.ListPicklistChangesRequest(limit=FEED_BATCH), timeout=CALL_TIMEOUT
        )
        if not answer.changes:
            return 0
        by_saga: dict[str, list[Any]] = defaultdict(list)
        for change in answer.changes:
            by_saga[change.saga_id].append(change)
        # Together, so that their writes share commits.
        done = await asyncio.gather(*(self.apply_changes(saga_id, found) for saga_id, found in by_saga.items()))
        acked = [c.change_id for applied, found in zip(done, by_saga.values()) if applied for c in found]
        if acked:
            await self.logistics.AckPicklistChanges(
                logistics_pb2.AckPicklistChangesRequest(change_ids=acked), timeout=CALL_TIMEOUT
            )
        return len(acked)

    async def apply_changes(self, saga_id: str, found: Iterable[Any]) -> bool:
        """Apply one saga's changes; False to keep them for later (its saga is still running:
        a picker may start a picklist before the saga's last step, and the reservation it opens
        must then see it)."""
        found = sorted(found, key=lambda c: c.change_id)
        running = False

        def change(saga: pb.Saga) -> None:
            nonlocal running
            if saga.status != pb.SAGA_STATUS_COMPLETED or not saga.HasField("reservation"):
                running = saga.status in (pb.SAGA_STATUS_PENDING, pb.SAGA_STATUS_RUNNING)
                return
            for c in found:
                apply_picklist(saga.reservation, c.picklist_id, c.status, c.changed_at)

        saga = await self.reservations.mutate(saga_id, change)
        if saga is not None and saga.reservation.state in ENDED and not saga.reservation.allocation_settled:
            await self.settle(saga)
        return not running

    # -- releasing, expiring, settling --------------------------------------------------------
    async def release(
        self, saga_id: str, cause: int, *, all_or_nothing: bool, reason: str, tenant: str | None = None
    ) -> pb.Saga:
        """Cancel the reservation's PENDING picklists (their locks released) as ``cause``.

        Raises FailedPrecondition PICKING_STARTED (nothing changed) when ``all_or_nothing`` and
        a picklist already started.
        """

        def mark(saga: pb.Saga) -> None:
            saga.reservation.releasing = cause
            if cause == RELEASED and reason:
                saga.cancel_reason = clip_text(reason)

        marked = await self.reservations.mutate(saga_id, mark, tenant=tenant)
        if marked is None:
            raise NotFound(f"saga {saga_id!r} not found", reason="SAGA_NOT_FOUND")
        try:
            answer = await self.logistics.CancelPicklists(
                logistics_pb2.CancelPicklistsRequest(
                    saga_id=saga_id,
                    all_or_nothing=all_or_nothing,
                    reason=clip_text(reason or state_name(cause).lower()),
                ),
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as err:
            await self.reservations.mutate(saga_id, _unmark)
            failure = RpcFailure.from_error(err)
            if failure.reason == "PICKING_STARTED":
                raise FailedPrecondition(
                    "picking has started for part of this reservation; set release_unpicked to release only "
                    "the warehouses no picker has touched",
                    reason="PICKING_STARTED",
                    metadata={"saga_id": saga_id, **{k: v for k, v in failure.metadata.items() if k == "picklists"}},
                ) from None
            raise
        picklists = [*answer.cancelled, *answer.untouched]

        def apply(saga: pb.Saga) -> None:
            for p in picklists:
                apply_picklist(saga.reservation, p.picklist_id, p.status, p.updated_at)
            saga.reservation.releasing = common_pb2.RESERVATION_STATE_UNSPECIFIED

        saga = await self.reservations.mutate(saga_id, apply)
        assert saga is not None
        if saga.reservation.state in ENDED and not saga.reservation.allocation_settled:
            await self.settle(saga)
        return saga

    async def settle(self, saga: pb.Saga) -> None:
        """Tell the allocation service how an ended reservation ended, then record it."""
        status = settle_status(saga.reservation)
        if saga.allocation.allocation_id:
            try:
                await self.allocation.SettleAllocation(
                    allocation_pb2.SettleAllocationRequest(
                        allocation_id=saga.allocation.allocation_id,
                        status=status,
                        reason=f"reservation {state_name(saga.reservation.state).lower()}",
                    ),
                    timeout=CALL_TIMEOUT,
                )
            except grpc.aio.AioRpcError as err:
                if RpcFailure.from_error(err).reason != "ALLOCATION_SETTLED":
                    log.warning(
                        "allocation of saga %s not settled yet (%s); the sweep retries", saga.saga_id, err.code().name
                    )
                    return

        def settled(s: pb.Saga) -> None:
            s.reservation.allocation_settled = True
            s.allocation.status = status

        await self.reservations.mutate(saga.saga_id, settled)
        self.outbox_wake()

    async def extend(self, saga_id: str, until: Timestamp, tenant: str | None) -> pb.Reservation:
        """ExtendReservation: the locks', the allocation's and the reservation's expiry to ``until``."""
        row = await self.store.load(saga_id, tenant)
        if row is None:
            raise NotFound(f"saga {saga_id!r} not found", reason="SAGA_NOT_FOUND")
        _extendable(row.saga, row.status)
        await self.inventory.ExtendLocks(
            inventory_pb2.ExtendLocksRequest(saga_id=saga_id, until=until), timeout=CALL_TIMEOUT
        )
        if row.saga.allocation.allocation_id:
            await self.allocation.ExtendAllocation(
                allocation_pb2.ExtendAllocationRequest(allocation_id=row.saga.allocation.allocation_id, until=until),
                timeout=CALL_TIMEOUT,
            )

        def push(saga: pb.Saga) -> None:
            if saga.reservation.state == RESERVED:
                saga.reservation.expires_at.CopyFrom(until)
                saga.allocation.expires_at.CopyFrom(until)
                for lock in saga.locks:
                    lock.expires_at.CopyFrom(until)

        saga = await self.reservations.mutate(saga_id, push)
        assert saga is not None
        _extendable(saga, saga.status)  # picking started meanwhile: say so (the extension is harmless)
        return saga.reservation

    async def sweep(self) -> None:
        while True:
            try:
                for saga_id in await self.reservations.claim_due():
                    await self.finish(saga_id)
            except Exception:
                log.exception("reservation sweep failed; retrying")
            await asyncio.sleep(self.sweep_interval)

    async def finish(self, saga_id: str) -> None:
        """Expire a due reservation's unpicked part; settle an ended one."""
        try:
            row = await self.store.load(saga_id)
            if row is None or not row.saga.HasField("reservation"):
                return
            r = row.saga.reservation
            if r.state in OPEN and r.HasField("expires_at") and ms(r.expires_at) <= time.time() * 1000:
                await self.release(saga_id, EXPIRED, all_or_nothing=False, reason="reservation expired")
            elif r.state in ENDED and not r.allocation_settled:
                await self.settle(row.saga)
            else:  # extended meanwhile, or picking started: look again when it is due
                await self.reservations.mutate(saga_id, lambda saga: None, tenant=None)
        except grpc.aio.AioRpcError as err:
            log.info("reservation of saga %s not finished (%s); the sweep retries", saga_id, err.code().name)

    def tasks(self) -> list[Callable[[], Any]]:
        return [self.follow_picklists, self.sweep]


def _unmark(saga: pb.Saga) -> None:
    saga.reservation.releasing = common_pb2.RESERVATION_STATE_UNSPECIFIED


def _extendable(saga: pb.Saga, status: int) -> None:
    if status != pb.SAGA_STATUS_COMPLETED or not saga.HasField("reservation"):
        raise FailedPrecondition(
            "only a COMPLETED saga's reservation can be extended",
            reason="NOT_RESERVED",
            metadata={"saga_id": saga.saga_id, "status": pb.SagaStatus.Name(status)},
        )
    state = saga.reservation.state
    if state in ENDED:
        raise FailedPrecondition(
            f"the reservation has ended ({state_name(state)})",
            reason="RESERVATION_ENDED",
            metadata={"saga_id": saga.saga_id, "reservation": state_name(state)},
        )
    if state != RESERVED:
        raise FailedPrecondition(
            "picking has started: the reservation no longer expires",
            reason="PICKING_STARTED",
            metadata={"saga_id": saga.saga_id, "reservation": state_name(state)},
        )
