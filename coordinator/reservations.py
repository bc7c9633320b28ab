"""The reservations as stored: each change to a COMPLETED saga's reservation in one transaction
with its events (``Reservations.mutate``), and the due ones claimed for the sweep."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import and_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator import models
from coordinator import transfers
from coordinator.lifecycle import ENDED, OPEN, changes, next_look_ms, notice_for, overall, reservation_event
from coordinator.rows import load_saga, state_bytes
from coordinator.store import now_ms
from coordinator.writes import event_values, pending_notice
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb

if TYPE_CHECKING:
    from coordinator.store import SagaStore


S = models.sagas
E = models.saga_events
OUTBOX = models.notice_outbox
# How long a replica holds a due reservation it is ending before another may try (epoch-ms lease).
SWEEP_BATCH = 100
SWEEP_LEASE_MS = 30_000


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
            query = (
                select(S.c.state, S.c.status, S.c.last_seq, S.c.tenant).where(S.c.saga_id == saga_id).with_for_update()
            )
            row = (await conn.execute(query)).first()
            if row is None or (tenant is not None and row.tenant != tenant):
                return None
            saga = load_saga(row.state, row.status)
            unchanged = saga.SerializeToString(deterministic=True)
            before = pb.Reservation()
            before.CopyFrom(saga.reservation)
            was_ended = before.state in ENDED
            transfer_before = saga.transfer_state
            change(saga)
            r = saga.reservation
            if r.warehouses:
                r.state = overall(r)
            transfers.follow(saga)
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
            if saga.transfer_state != transfer_before:
                seq += 1
                events.append(transfers.transfer_event(saga, seq))
            if events:
                r.updated_at.CopyFrom(events[-1].time)
            now = now_ms()
            await conn.execute(
                update(S)
                .where(S.c.saga_id == saga_id)
                .values(
                    state=state_bytes(saga),
                    last_seq=seq,
                    updated_at=now,
                    reservation_state=r.state or None,
                    reservation_expires_at=next_look_ms(r),
                )
            )
            if events:
                await conn.execute(E.insert(), event_values(saga_id, events))
            notice = notice_for(saga) if r.state in ENDED and not was_ended else None
            if notice is not None:
                step = common_pb2.SAGA_STEP_NOTIFY_RESERVATION
                pending = pending_notice(saga_id, step, notice.SerializeToString(), now)
                await conn.execute(insert(OUTBOX).values(**pending).on_conflict_do_nothing())
            return saga

        # The empty event list tells watchers to read the database again.
        return await self.store.writer.run(write, tag=(saga_id, ()))

    async def claim_due(self, limit: int = SWEEP_BATCH) -> list[str]:
        """Sagas whose reservation needs the sweep now, held ``SWEEP_LEASE_MS`` by this replica."""
        now = now_ms()
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
