"""Saga persistence: the saga row, its event log, leases.

Every change of a saga is one ``save``: the new state and the events it produced, guarded by
``owner`` so that a replica that lost its lease can no longer write. Writes go through the
group committer (``coordinator.commit``), which shares one commit among many sagas.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator import models
from coordinator.commit import GroupCommitter
from coordinator.lifecycle import next_look_ms
from coordinator.rows import SagaRow, row_of, state_bytes
from coordinator.writes import CreateWrite, SaveWrite
from invsaga.coordinator.v1 import coordinator_pb2 as pb

S = models.sagas
E = models.saga_events

ACTIVE = (pb.SAGA_STATUS_PENDING, pb.SAGA_STATUS_RUNNING, pb.SAGA_STATUS_COMPENSATING)


def now_ms() -> int:
    return int(time.time() * 1000)


def request_hash(request: pb.InventoryRequest) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


@dataclass(frozen=True)
class Claimed:
    """What CancelSaga and ResumeSaga learn from their one write, enough to answer and queue the saga."""

    previous: int  # the status the saga had
    status: int  # the status it has now
    request_id: str
    priority: int
    is_urgent: bool


def _to_compensating(saga_id: str, previous: int, owner: str, lease_ms: int, **flags: Any):
    """Take a saga of status ``previous`` back into compensation, under ``owner``'s lease."""
    now = now_ms()
    return (
        update(S)
        .where(S.c.saga_id == saga_id, S.c.status == previous)
        .values(
            status=pb.SAGA_STATUS_COMPENSATING,
            claimed_from=previous,
            owner=owner,
            lease_until=now + lease_ms,
            updated_at=now,
            **flags,
        )
    )


@dataclass(frozen=True)
class SagaFilters:
    """ListSagas' optional filters, each through an index: business keys, creation time (epoch
    ms, inclusive after, exclusive before), the reservation's state."""

    order_id: str = ""
    customer_id: str = ""
    created_after: int | None = None
    created_before: int | None = None
    reservation_state: int = 0
    kind: int = 0

    def apply(self, query):
        if self.order_id:
            query = query.where(S.c.order_id == self.order_id)
        if self.customer_id:
            query = query.where(S.c.customer_id == self.customer_id)
        if self.created_after is not None:
            query = query.where(S.c.created_at >= self.created_after)
        if self.created_before is not None:
            query = query.where(S.c.created_at < self.created_before)
        if self.reservation_state:
            query = query.where(S.c.reservation_state == self.reservation_state)
        if self.kind:
            query = query.where(S.c.kind == self.kind)
        return query


def _scoped(query, tenant: str | None):
    """``query`` limited to one tenant's sagas (None: every saga)."""
    return query if tenant is None else query.where(S.c.tenant == tenant)


class SagaStore:
    def __init__(self, engine: AsyncEngine, on_commit: Callable[[list[Any]], None] | None = None) -> None:
        self.engine = engine
        self.writer = GroupCommitter(engine, on_commit=on_commit)
        # Reads need no transaction: that saves the BEGIN and ROLLBACK round trips.
        self.reads = self.writer.autocommit

    def start(self) -> None:
        self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()

    def create(
        self,
        saga: pb.Saga,
        events: Sequence[pb.SagaEvent],
        *,
        req_hash: str,
        deadline: int,
        owner: str,
        lease_ms: int,
        trace_context: str = "",
        tenant: str = "",
    ) -> tuple[SagaRow, Awaitable[SagaRow | None]]:
        """Queue the insert of a new saga at once; return its row and what the insert found.

        The awaitable gives None once the saga is committed, or the row of the saga that
        already holds its request_id (then nothing was written). Writes queued after this one
        are committed after it.
        """
        now = now_ms()
        last_seq = events[-1].seq if events else 0
        write = CreateWrite(
            dict(
                saga_id=saga.saga_id,
                request_id=saga.request_id,
                request_hash=req_hash,
                status=saga.status,
                priority=saga.request.priority,
                is_urgent=saga.request.is_urgent,
                state=state_bytes(saga),
                last_seq=last_seq,
                cancel_requested=False,
                owner=owner,
                lease_until=now + lease_ms,
                deadline=deadline,
                trace_context=trace_context,
                created_at=now,
                updated_at=now,
                tenant=tenant,
                order_id=saga.request.order_id,
                customer_id=saga.request.customer_id,
                kind=saga.kind or pb.SAGA_KIND_RESERVATION,
            ),
            events,
        )
        found = self.writer.submit(write, tag=(saga.saga_id, tuple(events)))
        row = SagaRow(
            saga, saga.status, req_hash, last_seq, False, owner, now + lease_ms, deadline, trace_context, tenant, found
        )

        async def existing() -> SagaRow | None:
            other = await found
            return None if other is None else row_of(other)

        return row, existing()

    def save(
        self, saga: pb.Saga, events: Sequence[pb.SagaEvent], *, owner: str, notices: Sequence[tuple[int, bytes]] = ()
    ) -> asyncio.Future:
        """Persist the saga's new state and events if ``owner`` still holds it.

        The state is serialized now; the returned future gives the SaveResult once committed.
        The lease is not touched: ``renew`` keeps it. A save then changes no indexed column
        unless the status changes, so PostgreSQL updates the row in place (a HOT update, with
        the table's free space per page) without writing to any of its four indexes.
        ``notices`` go to the outbox in the same statement (``coordinator.outbox``).
        """
        values = dict(status=saga.status, state=state_bytes(saga), updated_at=now_ms(), claimed_from=0)
        if saga.status == pb.SAGA_STATUS_COMPLETED and saga.HasField("reservation"):
            values["reservation_state"] = saga.reservation.state
            values["reservation_expires_at"] = next_look_ms(saga.reservation)
        if events:
            values["last_seq"] = events[-1].seq
        write = SaveWrite(saga.saga_id, owner, values, events, notices)
        return self.writer.submit(write, tag=(saga.saga_id, tuple(events)) if events else None)

    async def request_id_taken(self, request_id: str) -> bool:
        """Whether a saga (of any tenant) holds ``request_id``."""
        async with self.reads.connect() as conn:
            return (await conn.execute(select(S.c.saga_id).where(S.c.request_id == request_id))).first() is not None

    async def load(self, saga_id: str, tenant: str | None = None) -> SagaRow | None:
        """The saga, or None if there is none (or it belongs to a tenant other than ``tenant``)."""
        async with self.reads.connect() as conn:
            row = (await conn.execute(_scoped(select(S).where(S.c.saga_id == saga_id), tenant))).first()
        return row_of(row) if row else None

    async def list(
        self,
        status: int,
        offset: int,
        limit: int,
        *,
        tenant: str | None = None,
        max_bytes: int | None = None,
        filters: SagaFilters | None = None,
    ) -> tuple[list[SagaRow], bool]:
        """A page of sagas, newest first, and whether another page may follow.

        With ``max_bytes`` the page ends before its stored states would pass that many bytes
        (the first saga always comes): a few huge sagas cannot make a page too big to send.
        The sizes are read from the rows' headers (``octet_length`` does not fetch a TOASTed
        value), so the sagas left for the next page are never loaded.
        """
        order = (S.c.created_at.desc(), S.c.saga_id)
        window = select(S.c.saga_id, S.c.created_at, func.octet_length(S.c.state).label("size"))
        if status:
            window = window.where(S.c.status == status)
        if filters is not None:
            window = filters.apply(window)
        page = _scoped(window, tenant).order_by(*order).offset(offset).limit(limit).subquery()
        by_age = (page.c.created_at.desc(), page.c.saga_id)
        sized = select(
            page.c.saga_id,
            func.sum(page.c.size).over(order_by=by_age).label("running"),
            func.row_number().over(order_by=by_age).label("n"),
            func.count().over().label("in_window"),
        ).subquery()
        query = select(S, sized.c.in_window).join(sized, sized.c.saga_id == S.c.saga_id)
        if max_bytes is not None:
            query = query.where(or_(sized.c.n == 1, sized.c.running <= max_bytes))
        query = query.order_by(sized.c.n)
        async with self.reads.connect() as conn:
            rows = (await conn.execute(query)).all()
        in_window = rows[0].in_window if rows else 0
        return [row_of(r) for r in rows], len(rows) < in_window or in_window == limit

    async def events_after(self, saga_id: str, after_seq: int, limit: int = 1000) -> builtins.list[pb.SagaEvent]:
        async with self.reads.connect() as conn:
            rows = await conn.execute(
                select(E.c.event).where(E.c.saga_id == saga_id, E.c.seq > after_seq).order_by(E.c.seq).limit(limit)
            )
            return [pb.SagaEvent.FromString(r.event) for r in rows]

    async def status_of(self, saga_id: str, tenant: str | None = None) -> int | None:
        async with self.reads.connect() as conn:
            return (await conn.execute(_scoped(select(S.c.status).where(S.c.saga_id == saga_id), tenant))).scalar()

    async def request_cancel(
        self, saga_id: str, owner: str, lease_ms: int, tenant: str | None = None, reason: str = ""
    ) -> Claimed | None:
        """Flag a saga for cancellation; a COMPLETED one is claimed here to release its reservation.

        None if the saga does not exist (or belongs to a tenant other than ``tenant``). The
        answer comes from this write alone: CancelSaga reads nothing after its effect.
        """

        async def cancel(conn: AsyncConnection, status: int) -> int:
            if status in (pb.SAGA_STATUS_PENDING, pb.SAGA_STATUS_RUNNING):
                await conn.execute(
                    update(S)
                    .where(S.c.saga_id == saga_id, S.c.status.in_(ACTIVE))
                    .values(cancel_requested=True, cancel_reason=reason)
                )
            elif status == pb.SAGA_STATUS_COMPLETED:
                await conn.execute(_to_compensating(saga_id, status, owner, lease_ms, cancel_requested=True))
                return pb.SAGA_STATUS_COMPENSATING
            return status

        return await self._claim(saga_id, tenant, cancel)

    async def _claim(
        self, saga_id: str, tenant: str | None, change: Callable[[AsyncConnection, int], Awaitable[int]]
    ) -> Claimed | None:
        """The saga's row locked, then ``change(conn, status)`` writes and answers its new status."""

        async def write(conn: AsyncConnection) -> Claimed | None:
            # Locked: of two cancels racing on a COMPLETED saga, the second sees COMPENSATING.
            query = select(S.c.status, S.c.request_id, S.c.priority, S.c.is_urgent).with_for_update()
            found = (await conn.execute(_scoped(query.where(S.c.saga_id == saga_id), tenant))).first()
            if found is None:
                return None
            status = await change(conn, found.status)
            return Claimed(found.status, status, found.request_id, found.priority, bool(found.is_urgent))

        # The empty event list tells watchers to read the database again.
        return await self.writer.run(write, tag=(saga_id, ()))

    async def status_and_reservation(self, saga_id: str) -> tuple[int | None, int | None]:
        """The saga's status and its reservation's state, from their columns ((None, None): no saga)."""
        async with self.reads.connect() as conn:
            row = (await conn.execute(select(S.c.status, S.c.reservation_state).where(S.c.saga_id == saga_id))).first()
        return (row.status, row.reservation_state) if row else (None, None)

    async def cancel_reason(self, saga_id: str) -> str:
        async with self.reads.connect() as conn:
            return (await conn.execute(select(S.c.cancel_reason).where(S.c.saga_id == saga_id))).scalar() or ""

    async def claim_failed(self, saga_id: str, owner: str, lease_ms: int, tenant: str | None = None) -> Claimed | None:
        """ResumeSaga: take a FAILED saga back into compensation (None: no such saga)."""

        async def resume(conn: AsyncConnection, status: int) -> int:
            if status != pb.SAGA_STATUS_FAILED:
                return status
            await conn.execute(_to_compensating(saga_id, status, owner, lease_ms))
            return pb.SAGA_STATUS_COMPENSATING

        return await self._claim(saga_id, tenant, resume)

    async def claim_orphans(self, owner: str, lease_ms: int, limit: int = 500) -> builtins.list[tuple[str, int, bool]]:
        """Claim active sagas whose owner's lease expired: (saga_id, priority, is_urgent)."""
        now = now_ms()
        async with self.engine.begin() as conn:
            query = (
                select(S.c.saga_id, S.c.priority, S.c.is_urgent)
                .where(S.c.status.in_(ACTIVE), or_(S.c.lease_until.is_(None), S.c.lease_until < now))
                .order_by(S.c.is_urgent.desc(), S.c.priority.desc(), S.c.created_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = (await conn.execute(query)).all()
            if rows:
                await conn.execute(
                    update(S)
                    .where(S.c.saga_id.in_([r.saga_id for r in rows]))
                    .values(owner=owner, lease_until=now + lease_ms)
                )
        return [(r.saga_id, r.priority, bool(r.is_urgent)) for r in rows]

    async def renew(self, owner: str, lease_ms: int) -> None:
        now = now_ms()

        async def write(conn: AsyncConnection) -> None:
            await conn.execute(
                update(S).where(S.c.owner == owner, S.c.status.in_(ACTIVE)).values(lease_until=now + lease_ms)
            )

        await self.writer.run(write)

    async def release_all(self, owner: str) -> None:
        """On shutdown: let another replica pick up this one's sagas at once."""
        async with self.engine.begin() as conn:
            await conn.execute(update(S).where(S.c.owner == owner, S.c.status.in_(ACTIVE)).values(lease_until=0))

    async def counts(self) -> dict[int, int]:
        async with self.reads.connect() as conn:
            rows = await conn.execute(select(S.c.status, func.count()).group_by(S.c.status))
            return {row[0]: row[1] for row in rows}
