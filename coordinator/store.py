"""Saga persistence: the saga row, its event log, leases; writes group-committed across sagas.

Every change of a saga is one ``save``: the new state, the events it produced and a renewed
lease, guarded by ``owner`` so that a replica that lost its lease can no longer write. Saves
from many sagas are gathered into one transaction (group commit): the database's commit is
the cost that matters, and sagas in flight together share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator import models
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.db import insert_ignore, is_sqlite

log = logging.getLogger("invsaga.coordinator.store")
T = TypeVar("T")
S = models.sagas
E = models.saga_events

ACTIVE = (pb.SAGA_STATUS_PENDING, pb.SAGA_STATUS_RUNNING, pb.SAGA_STATUS_COMPENSATING)
TERMINAL = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED)
NOTIFY_CHANNEL = "invsaga_saga_events"


def now_ms() -> int:
    return int(time.time() * 1000)


def request_hash(request: pb.InventoryRequest) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


class GroupCommitter:
    """Runs submitted write functions together in one transaction per batch."""

    def __init__(self, engine: AsyncEngine, max_batch: int = 512, on_commit: Callable[[list[Any]], None] | None = None):
        self.engine = engine
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.origin = uuid.uuid4().hex[:12]
        self._queue: list[tuple[Callable[[AsyncConnection], Awaitable[Any]], asyncio.Future, Any]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def submit(self, fn: Callable[[AsyncConnection], Awaitable[T]], tag: Any = None) -> asyncio.Future:
        """Queue ``fn(conn)`` for the next shared transaction; ``tag`` is passed to ``on_commit``."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((fn, future, tag))
        self._wakeup.set()
        return future

    async def run(self, fn: Callable[[AsyncConnection], Awaitable[T]], tag: Any = None) -> T:
        return await self.submit(fn, tag)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                await self._commit(batch)

    async def _commit(self, batch) -> None:
        try:
            async with self.engine.begin() as conn:
                results = await self._apply(conn, batch)
                await self._notify(conn, [tag[0] for _, _, tag in batch if tag is not None])
        except Exception as exc:
            if len(batch) == 1:
                _, future, _ = batch[0]
                if not future.done():
                    future.set_exception(exc)
                return
            # One bad write must not fail the others: retry each alone.
            for item in batch:
                await self._commit([item])
            return
        for (_, future, _), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
        if self.on_commit:
            self.on_commit([tag for (_, _, tag), result in zip(batch, results) if tag is not None and _ok(result)])

    async def _apply(self, conn: AsyncConnection, batch) -> list[Any]:
        """Run the batch's writes; on PostgreSQL all saga saves go in two statements."""
        saves = [i for i, (fn, _, _) in enumerate(batch) if isinstance(fn, SaveWrite)]
        if conn.dialect.name != "postgresql" or len(saves) < 2:
            return [await fn(conn) for fn, _, _ in batch]
        results: list[Any] = [None] * len(batch)
        for i, (fn, _, _) in enumerate(batch):
            if i not in saves:
                results[i] = await fn(conn)
        bulk = [batch[i][0] for i in saves]
        for i, result in zip(saves, await SaveWrite.bulk(conn, bulk)):
            results[i] = result
        return results

    async def _notify(self, conn: AsyncConnection, saga_ids: list[str]) -> None:
        """On PostgreSQL, wake watchers on every replica (delivered at commit).

        The payload names this replica first so that its own listener can skip what it has
        already delivered from memory.
        """
        if not saga_ids or conn.dialect.name != "postgresql":
            return
        payload: list[str] = [self.origin]
        for saga_id in dict.fromkeys(saga_ids):
            if sum(map(len, payload)) + len(payload) + len(saga_id) > 7000:
                await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": ",".join(payload)})
                payload = [self.origin]
            payload.append(saga_id)
        if len(payload) > 1:
            await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": ",".join(payload)})


def _ok(result: Any) -> bool:
    return not isinstance(result, SaveResult) or result.ok


_BULK_SAVE = text(
    """
    UPDATE sagas AS s
       SET status = v.status, state = v.state, updated_at = v.updated_at,
           lease_until = v.lease_until, last_seq = GREATEST(s.last_seq, v.last_seq)
      FROM unnest(CAST(:ids AS text[]), CAST(:owners AS text[]), CAST(:statuses AS integer[]),
                  CAST(:states AS bytea[]), CAST(:updated AS bigint[]), CAST(:leases AS bigint[]),
                  CAST(:seqs AS bigint[]))
           AS v(saga_id, owner, status, state, updated_at, lease_until, last_seq)
     WHERE s.saga_id = v.saga_id AND s.owner = v.owner
    RETURNING s.saga_id, s.cancel_requested
    """
)


class SaveWrite:
    """One saga's save: its new row values and events, guarded by its owner."""

    def __init__(self, saga_id: str, owner: str, values: dict[str, Any], events: Sequence[pb.SagaEvent]) -> None:
        self.saga_id = saga_id
        self.owner = owner
        self.values = values
        self.events = [{"saga_id": saga_id, "seq": e.seq, "event": e.SerializeToString()} for e in events]

    async def __call__(self, conn: AsyncConnection) -> "SaveResult":
        result = await conn.execute(
            update(S)
            .where(S.c.saga_id == self.saga_id, S.c.owner == self.owner)
            .values(**self.values)
            .returning(S.c.cancel_requested)
        )
        row = result.first()
        if row is None:
            return SaveResult(ok=False)
        if self.events:
            await conn.execute(E.insert(), self.events)
        return SaveResult(ok=True, cancel_requested=bool(row.cancel_requested))

    @staticmethod
    async def bulk(conn: AsyncConnection, writes: list["SaveWrite"]) -> list["SaveResult"]:
        rows = await conn.execute(
            _BULK_SAVE,
            {
                "ids": [w.saga_id for w in writes],
                "owners": [w.owner for w in writes],
                "statuses": [w.values["status"] for w in writes],
                "states": [w.values["state"] for w in writes],
                "updated": [w.values["updated_at"] for w in writes],
                "leases": [w.values["lease_until"] for w in writes],
                "seqs": [w.values.get("last_seq", 0) for w in writes],
            },
        )
        saved = {r.saga_id: bool(r.cancel_requested) for r in rows}
        events = [e for w in writes if w.saga_id in saved for e in w.events]
        if events:
            await conn.execute(E.insert(), events)
        return [
            SaveResult(ok=True, cancel_requested=saved[w.saga_id]) if w.saga_id in saved else SaveResult(ok=False)
            for w in writes
        ]


@dataclass
class SagaRow:
    saga: pb.Saga
    status: int
    request_hash: str
    last_seq: int
    cancel_requested: bool
    owner: str | None
    lease_until: int | None
    deadline: int
    trace_context: str


def _row(r) -> SagaRow:
    saga = pb.Saga.FromString(r.state)
    return SagaRow(
        saga=saga,
        status=r.status,
        request_hash=r.request_hash,
        last_seq=r.last_seq,
        cancel_requested=bool(r.cancel_requested),
        owner=r.owner,
        lease_until=r.lease_until,
        deadline=r.deadline,
        trace_context=r.trace_context,
    )


@dataclass
class SaveResult:
    ok: bool  # False: this replica no longer owns the saga
    cancel_requested: bool = False


class SagaStore:
    def __init__(self, engine: AsyncEngine, on_commit: Callable[[list[Any]], None] | None = None) -> None:
        self.engine = engine
        self.sqlite = is_sqlite(str(engine.url))
        self.writer = GroupCommitter(engine, on_commit=on_commit)

    def start(self) -> None:
        self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()

    async def create(
        self,
        saga: pb.Saga,
        events: Sequence[pb.SagaEvent],
        *,
        req_hash: str,
        deadline: int,
        owner: str,
        lease_ms: int,
        trace_context: str = "",
    ) -> tuple[SagaRow, bool]:
        """Insert a new saga; if its request_id exists, return that saga and False instead."""
        now = now_ms()

        async def write(conn: AsyncConnection):
            inserted = await conn.execute(
                insert_ignore(conn, S).values(
                    saga_id=saga.saga_id,
                    request_id=saga.request_id,
                    request_hash=req_hash,
                    status=saga.status,
                    priority=saga.request.priority,
                    is_urgent=saga.request.is_urgent,
                    state=saga.SerializeToString(),
                    last_seq=events[-1].seq if events else 0,
                    cancel_requested=False,
                    owner=owner,
                    lease_until=now + lease_ms,
                    deadline=deadline,
                    trace_context=trace_context,
                    created_at=now,
                    updated_at=now,
                )
                .returning(S.c.saga_id)
            )
            if inserted.first() is not None:
                await self._insert_events(conn, saga.saga_id, events)
                return None
            return (await conn.execute(select(S).where(S.c.request_id == saga.request_id))).one()

        existing = await self.writer.run(write, tag=(saga.saga_id, tuple(events)))
        if existing is None:
            return (
                SagaRow(saga, saga.status, req_hash, events[-1].seq if events else 0, False, owner, now + lease_ms, deadline, trace_context),
                True,
            )
        return _row(existing), False

    async def _insert_events(self, conn: AsyncConnection, saga_id: str, events: Sequence[pb.SagaEvent]) -> None:
        if events:
            await conn.execute(
                E.insert(), [{"saga_id": saga_id, "seq": e.seq, "event": e.SerializeToString()} for e in events]
            )

    def save(
        self, saga: pb.Saga, events: Sequence[pb.SagaEvent], *, owner: str, lease_ms: int, release: bool = False
    ) -> asyncio.Future:
        """Persist the saga's new state and events if ``owner`` still holds it.

        The state is serialized now; the returned future gives the SaveResult once committed.
        """
        now = now_ms()
        values = dict(
            status=saga.status,
            state=saga.SerializeToString(),
            updated_at=now,
            lease_until=now if release else now + lease_ms,
        )
        if events:
            values["last_seq"] = events[-1].seq
        write = SaveWrite(saga.saga_id, owner, values, events)
        return self.writer.submit(write, tag=(saga.saga_id, tuple(events)) if events else None)

    async def load(self, saga_id: str) -> SagaRow | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(S).where(S.c.saga_id == saga_id))).first()
        return _row(row) if row else None

    async def list(self, status: int, offset: int, limit: int) -> list[SagaRow]:
        query = select(S).order_by(S.c.created_at.desc(), S.c.saga_id).offset(offset).limit(limit)
        if status:
            query = query.where(S.c.status == status)
        async with self.engine.connect() as conn:
            return [_row(r) for r in await conn.execute(query)]

    async def events_after(self, saga_id: str, after_seq: int, limit: int = 1000) -> list[pb.SagaEvent]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(E.c.event)
                .where(E.c.saga_id == saga_id, E.c.seq > after_seq)
                .order_by(E.c.seq)
                .limit(limit)
            )
            return [pb.SagaEvent.FromString(r.event) for r in rows]

    async def status_of(self, saga_id: str) -> int | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(S.c.status).where(S.c.saga_id == saga_id))).scalar()

    async def request_cancel(self, saga_id: str, owner: str, lease_ms: int) -> int | None:
        """Flag a saga for cancellation; a COMPLETED one is claimed here to release its reservation.

        Returns the status the saga had, or None if it does not exist.
        """
        now = now_ms()

        async def write(conn: AsyncConnection):
            status = (await conn.execute(select(S.c.status).where(S.c.saga_id == saga_id))).scalar()
            if status in (pb.SAGA_STATUS_PENDING, pb.SAGA_STATUS_RUNNING):
                await conn.execute(
                    update(S).where(S.c.saga_id == saga_id, S.c.status.in_(ACTIVE)).values(cancel_requested=True)
                )
            elif status == pb.SAGA_STATUS_COMPLETED:
                await conn.execute(
                    update(S)
                    .where(S.c.saga_id == saga_id, S.c.status == pb.SAGA_STATUS_COMPLETED)
                    .values(
                        status=pb.SAGA_STATUS_COMPENSATING,
                        cancel_requested=True,
                        owner=owner,
                        lease_until=now + lease_ms,
                        updated_at=now,
                    )
                )
            return status

        return await self.writer.run(write)

    async def claim_failed(self, saga_id: str, owner: str, lease_ms: int) -> int | None:
        """ResumeSaga: take a FAILED saga back into compensation. Returns its previous status."""
        now = now_ms()

        async def write(conn: AsyncConnection):
            status = (await conn.execute(select(S.c.status).where(S.c.saga_id == saga_id))).scalar()
            if status == pb.SAGA_STATUS_FAILED:
                await conn.execute(
                    update(S)
                    .where(S.c.saga_id == saga_id, S.c.status == pb.SAGA_STATUS_FAILED)
                    .values(status=pb.SAGA_STATUS_COMPENSATING, owner=owner, lease_until=now + lease_ms, updated_at=now)
                )
            return status

        return await self.writer.run(write)

    async def claim_orphans(self, owner: str, lease_ms: int, limit: int = 500) -> list[tuple[str, int, bool]]:
        """Claim active sagas whose owner's lease expired: (saga_id, priority, is_urgent)."""
        now = now_ms()
        async with self.engine.begin() as conn:
            query = (
                select(S.c.saga_id, S.c.priority, S.c.is_urgent)
                .where(S.c.status.in_(ACTIVE), or_(S.c.lease_until.is_(None), S.c.lease_until < now))
                .order_by(S.c.is_urgent.desc(), S.c.priority.desc(), S.c.created_at)
                .limit(limit)
            )
            if not self.sqlite:
                query = query.with_for_update(skip_locked=True)
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
            await conn.execute(
                update(S).where(S.c.owner == owner, S.c.status.in_(ACTIVE)).values(lease_until=0)
            )

    async def counts(self) -> dict[int, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(S.c.status, func.count()).group_by(S.c.status))
            return {status: n for status, n in rows}


