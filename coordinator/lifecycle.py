"""The reservation a COMPLETED saga holds, after the saga (SPEC §9).

A COMPLETED saga holds stock for its order: one picklist and its locks per warehouse. From then
on each warehouse's part, and the order as a whole, goes RESERVED -> PICKING -> FULFILLED, or
ends RELEASED (cancelled before picking) or EXPIRED (its time ran out before picking); an order
some of whose warehouses were fulfilled and the rest released or expired ends
PARTIALLY_FULFILLED. The state lives in the saga (``Saga.reservation``, GetSaga shows it), each
change is an event (``RESERVATION_CHANGED``), and two columns beside the blob serve ListSagas'
filter and the sweep below.

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
from sqlalchemy import and_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator import models
from coordinator.steps import clip_text, notice_text
from invsaga.allocation.v1 import allocation_pb2, allocation_pb2_grpc
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.logistics.v1 import logistics_pb2, logistics_pb2_grpc
from invsaga.notify.v1 import notify_pb2
from invsaga.runtime.errors import FailedPrecondition, NotFound, RpcFailure

if TYPE_CHECKING:
    from coordinator.steps import Participants
    from coordinator.store import SagaStore
    from invsaga.runtime.config import Settings

log = logging.getLogger("invsaga.coordinator.lifecycle")

S = models.sagas
E = models.saga_events
OUTBOX = models.notice_outbox

RESERVED = common_pb2.RESERVATION_STATE_RESERVED
PICKING = common_pb2.RESERVATION_STATE_PICKING
FULFILLED = common_pb2.RESERVATION_STATE_FULFILLED
RELEASED = common_pb2.RESERVATION_STATE_RELEASED
EXPIRED = common_pb2.RESERVATION_STATE_EXPIRED
PARTIALLY_FULFILLED = common_pb2.RESERVATION_STATE_PARTIALLY_FULFILLED
OPEN = frozenset({RESERVED, PICKING})
ENDED = frozenset({FULFILLED, RELEASED, EXPIRED, PARTIALLY_FULFILLED})
LIFECYCLE_EVENTS = frozenset({pb.SAGA_EVENT_TYPE_RESERVATION_CHANGED, pb.SAGA_EVENT_TYPE_RESERVATION_EXTENDED})

PENDING_LIST = common_pb2.PICKLIST_STATUS_PENDING
PROCESSING_LIST = common_pb2.PICKLIST_STATUS_PROCESSING
COMPLETED_LIST = common_pb2.PICKLIST_STATUS_COMPLETED
CANCELLED_LIST = common_pb2.PICKLIST_STATUS_CANCELLED

# How often the keeper reads logistics' picklist changes, and how many at a time; how long a
# replica holds a due reservation it is ending before another may try (epoch-ms lease).
FEED_INTERVAL = 0.2
FEED_BATCH = 500
SWEEP_BATCH = 100
SWEEP_LEASE_MS = 30_000
CALL_TIMEOUT = 10.0


def now_ts() -> Timestamp:
    ns = time.time_ns()
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def reservation_event(saga: pb.Saga, seq: int, type_: int, state: int, warehouse_id: str = "") -> pb.SagaEvent:
    return pb.SagaEvent(
        seq=seq,
        type=type_,
        status=saga.status,
        time=now_ts(),
        saga_id=saga.saga_id,
        reservation_state=state,
        warehouse_id=warehouse_id,
    )


def state_name(state: int) -> str:
    return common_pb2.ReservationState.Name(state).removeprefix("RESERVATION_STATE_")


def ms(ts: Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


# -- the state, pure ----------------------------------------------------------------------------


def open_reservation(saga: pb.Saga) -> None:
    """The reservation of a saga that just COMPLETED: every warehouse RESERVED until the locks'
    expiry (the earliest lock's, else the allocation's)."""
    r = saga.reservation
    r.Clear()
    now = now_ts()
    expiries = [lock.expires_at for lock in saga.locks if lock.HasField("expires_at")]
    if expiries:
        r.expires_at.CopyFrom(min(expiries, key=ms))
    elif saga.allocation.HasField("expires_at"):
        r.expires_at.CopyFrom(saga.allocation.expires_at)
    for picklist in saga.picklists:
        r.warehouses.add(
            warehouse_id=picklist.warehouse_id,
            picklist_id=picklist.picklist_id,
            state=RESERVED,
            picklist_status=PENDING_LIST,
            updated_at=now,
        )
    r.state = overall(r)
    r.updated_at.CopyFrom(now)


def overall(r: pb.Reservation) -> int:
    """The order's state from its warehouses' states."""
    states = [w.state for w in r.warehouses]
    if not states:
        return RELEASED
    if any(s in OPEN for s in states):
        return PICKING if any(s in (PICKING, FULFILLED) for s in states) else RESERVED
    if all(s == FULFILLED for s in states):
        return FULFILLED
    if any(s == FULFILLED for s in states):
        return PARTIALLY_FULFILLED
    return RELEASED if any(s == RELEASED for s in states) else EXPIRED


def _rank(state: int) -> int:
    return {RESERVED: 0, PICKING: 1}.get(state, 2)


def apply_picklist(r: pb.Reservation, picklist_id: str, status: int, when: Timestamp | None = None) -> bool:
    """A picklist's new status, as logistics reported it; True if a warehouse's state changed.

    States only move forward (a late PROCESSING after COMPLETED changes nothing) and an ended
    warehouse stays as it ended. A CANCELLED picklist ends as what the release under way says
    (``releasing``), RELEASED when none is (an operator cancelled it by hand).
    """
    target = {
        PENDING_LIST: RESERVED,
        PROCESSING_LIST: PICKING,
        COMPLETED_LIST: FULFILLED,
        CANCELLED_LIST: r.releasing or RELEASED,
    }.get(status)
    if target is None:
        return False
    for w in r.warehouses:
        if w.picklist_id != picklist_id:
            continue
        if w.state in ENDED or _rank(target) <= _rank(w.state):
            return False
        w.state, w.picklist_status = target, status
        w.updated_at.CopyFrom(when or now_ts())
        return True
    return False


def settle_status(r: pb.Reservation) -> int:
    """How the allocation of an ended reservation ends."""
    if any(w.state == FULFILLED for w in r.warehouses):
        return common_pb2.ALLOCATION_STATUS_FULFILLED
    if r.state == EXPIRED:
        return common_pb2.ALLOCATION_STATUS_EXPIRED
    return common_pb2.ALLOCATION_STATUS_CANCELLED


def next_look_ms(r: pb.Reservation) -> int | None:
    """``reservation_expires_at``: when the sweep must next look at the reservation (0: at once,
    to settle an ended one), None once there is nothing left to do."""
    if r.state in ENDED:
        return None if r.allocation_settled else 0
    if any(w.state == RESERVED for w in r.warehouses) and r.HasField("expires_at"):
        return ms(r.expires_at)
    return None


def changes(before: pb.Reservation, after: pb.Reservation) -> list[tuple[str, int]]:
    """(warehouse_id or '' for the order, new state) for each state that changed."""
    old = {w.picklist_id: w.state for w in before.warehouses}
    found = [(w.warehouse_id, w.state) for w in after.warehouses if old.get(w.picklist_id) != w.state]
    if after.state != before.state:
        found.append(("", after.state))
    return found


def notice_for(saga: pb.Saga) -> notify_pb2.ExecuteRequest | None:
    """The one notice of an ended reservation: cancelled or expired; none for a fulfilled one."""
    r, request = saga.reservation, saga.request
    states = {w.state for w in r.warehouses}
    if EXPIRED in states:
        kind, head = common_pb2.NOTIFICATION_KIND_RESERVATION_EXPIRED, "reservation expired for order "
        tail = ": its stock was released before picking started"
    elif RELEASED in states:
        kind, head = common_pb2.NOTIFICATION_KIND_RESERVATION_CANCELLED, "reservation cancelled for order "
        tail = ": its stock was released" + (" (the picked part stays)" if FULFILLED in states else "")
    else:
        return None
    reason = saga.cancel_reason if kind == common_pb2.NOTIFICATION_KIND_RESERVATION_CANCELLED else ""
    return notify_pb2.ExecuteRequest(
        context=common_pb2.StepContext(
            saga_id=saga.saga_id,
            step=common_pb2.SAGA_STEP_NOTIFY_RESERVATION,
            idempotency_key=f"{saga.saga_id}:{common_pb2.SAGA_STEP_NOTIFY_RESERVATION}",
        ),
        notify=notify_pb2.NotifyInput(
            kind=kind,
            order_id=clip_text(request.order_id),
            customer_id=clip_text(request.customer_id),
            message=notice_text(head, request.order_id, tail, f" ({reason})" if reason else ""),
            attributes={
                "saga_id": saga.saga_id,
                "reservation": state_name(r.state),
                "warehouses": clip_text(
                    ",".join(w.warehouse_id for w in r.warehouses if w.state in (RELEASED, EXPIRED))
                ),
            },
        ),
    )


# -- the state, stored ------------------------------------------------------------------------


class Reservations:
    """Changes to COMPLETED sagas' reservations, each in one transaction with its events."""

    def __init__(self, store: "SagaStore") -> None:
        self.store = store

    async def mutate(
        self, saga_id: str, change: Callable[[pb.Saga], Any], *, tenant: str | None = None
    ) -> pb.Saga | None:
        """Apply ``change(saga)`` to the stored saga, under its row lock, and write the new
        state, an event per state changed and, if the reservation just ended, its notice.

        ``change`` changes the saga in place; what it returns is ignored. Returns the saga as
        stored afterwards (None: no such saga, or another tenant's).
        """

        async def write(conn: AsyncConnection) -> pb.Saga | None:
            query = select(S.c.state, S.c.last_seq, S.c.tenant).where(S.c.saga_id == saga_id).with_for_update()
            row = (await conn.execute(query)).first()
            if row is None or (tenant is not None and row.tenant != tenant):
                return None
            saga = pb.Saga.FromString(row.state)
            unchanged = saga.SerializeToString(deterministic=True)
            before = pb.Reservation()
            before.CopyFrom(saga.reservation)
            was_ended = before.state in ENDED
            change(saga)
            r = saga.reservation
            if r.warehouses:
                r.state = overall(r)
            if saga.SerializeToString(deterministic=True) == unchanged:
                if saga.HasField("reservation"):  # nothing changed: the sweep's next look still moves
                    await conn.execute(
                        update(S)
                        .where(S.c.saga_id == saga_id, S.c.reservation_expires_at.is_distinct_from(next_look_ms(r)))
                        .values(reservation_expires_at=next_look_ms(r))
                    )
                return saga
            seq = row.last_seq
            events = []
            for warehouse_id, state in changes(before, r):
                seq += 1
                events.append(reservation_event(saga, seq, pb.SAGA_EVENT_TYPE_RESERVATION_CHANGED, state, warehouse_id))
            if before.expires_at != r.expires_at and r.state in OPEN:
                seq += 1
                events.append(reservation_event(saga, seq, pb.SAGA_EVENT_TYPE_RESERVATION_EXTENDED, r.state))
            if events:
                r.updated_at.CopyFrom(events[-1].time)
            now = int(time.time() * 1000)
            await conn.execute(
                update(S)
                .where(S.c.saga_id == saga_id)
                .values(
                    state=saga.SerializeToString(),
                    last_seq=seq,
                    updated_at=now,
                    reservation_state=r.state or None,
                    reservation_expires_at=next_look_ms(r),
                )
            )
            if events:
                await conn.execute(
                    E.insert(), [{"saga_id": saga_id, "seq": ev.seq, "event": ev.SerializeToString()} for ev in events]
                )
            notice = notice_for(saga) if r.state in ENDED and not was_ended else None
            if notice is not None:
                await conn.execute(
                    insert(OUTBOX)
                    .values(
                        saga_id=saga_id,
                        step=common_pb2.SAGA_STEP_NOTIFY_RESERVATION,
                        request=notice.SerializeToString(),
                        state="pending",
                        attempts=0,
                        last_error="",
                        next_attempt_at=now,
                        created_at=now,
                    )
                    .on_conflict_do_nothing()
                )
            return saga

        # The empty event list tells watchers to read the database again.
        return await self.store.writer.run(write, tag=(saga_id, ()))

    async def claim_due(self, limit: int = SWEEP_BATCH) -> list[str]:
        """Sagas whose reservation needs the sweep now, held ``SWEEP_LEASE_MS`` by this replica."""
        now = int(time.time() * 1000)
        async with self.store.engine.begin() as conn:
            due = (
                select(S.c.saga_id)
                .where(and_(S.c.reservation_expires_at.is_not(None), S.c.reservation_expires_at <= now))
                .order_by(S.c.reservation_expires_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            ids = [r.saga_id for r in (await conn.execute(due)).all()]
            if ids:
                await conn.execute(
                    update(S).where(S.c.saga_id.in_(ids)).values(reservation_expires_at=now + SWEEP_LEASE_MS)
                )
        return ids


# -- the keeper -----------------------------------------------------------------------------


class ReservationKeeper:
    """Follows COMPLETED sagas' reservations: picklist changes in, expiries and settlements out."""

    def __init__(self, store: "SagaStore", participants: "Participants", settings: "Settings") -> None:
        self.reservations = Reservations(store)
        self.store = store
        self.settings = settings
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
            except asyncio.CancelledError:
                raise
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
            except asyncio.CancelledError:
                raise
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


__all__ = ["ENDED", "LIFECYCLE_EVENTS", "OPEN", "ReservationKeeper", "Reservations", "open_reservation", "overall"]
