"""Saga persistence: the saga row, its event log, leases; writes group-committed across sagas.

Every change of a saga is one ``save``: the new state, the events it produced and a renewed
lease, guarded by ``owner`` so that a replica that lost its lease can no longer write. Saves
from many sagas are gathered into one transaction (group commit): the database's commit is
the cost that matters, and sagas in flight together share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import psycopg
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

    def __init__(
        self,
        engine: AsyncEngine,
        max_batch: int = 512,
        on_commit: Callable[[list[Any]], None] | None = None,
        autocommit: AsyncEngine | None = None,
    ):
        self.engine = engine
        self.autocommit = autocommit or engine
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.origin = uuid.uuid4().hex[:12]
        self._queue: list[tuple[Callable[[AsyncConnection], Awaitable[Any]], asyncio.Future, Any]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._held: AsyncConnection | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._held is not None:
            with contextlib.suppress(Exception):
                await self._held.close()
            self._held = None

    def submit(self, fn: Callable[[AsyncConnection], Awaitable[T]], tag: Any = None) -> asyncio.Future:
        """Queue ``fn(conn)`` for the next shared transaction; ``tag`` is passed to ``on_commit``."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((fn, future, tag))
        self._wakeup.set()
        return future

    async def run(self, fn: Callable[[AsyncConnection], Awaitable[T]], tag: Any = None) -> T:
        return await self.submit(fn, tag)

    async def _run(self) -> None:
        postgres = self.engine.dialect.name == "postgresql"
        while True:
            await self._wakeup.wait()
            # Let what woke the writer go first: a driver queues its save and then sends the
            # next step's call, which should not wait behind the write's preparation.
            await asyncio.sleep(0)
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._next_batch()
                if not postgres:
                    await self._commit(batch)
                    continue
                bulk = [item for item in batch if isinstance(item[0], (CreateWrite, SaveWrite))]
                rest = [item for item in batch if not isinstance(item[0], (CreateWrite, SaveWrite))]
                if rest:
                    await self._commit(rest)
                if bulk:
                    await self._commit_bulk(bulk)

    def _next_batch(self) -> tuple[list[Any], list[Any]]:
        """The next batch, and what stays queued.

        A saga's second save waits for the next batch, and so does everything of that saga
        queued after it: one statement updating a row twice keeps either value, and the later
        save must be the one that stays.
        """
        batch, held, saving, blocked = [], [], set(), set()
        for item in self._queue:
            fn = item[0]
            saga_id = getattr(fn, "saga_id", None)
            if len(batch) >= self.max_batch or (saga_id is not None and saga_id in blocked):
                held.append(item)
            elif isinstance(fn, SaveWrite) and saga_id in saving:
                held.append(item)
                blocked.add(saga_id)
            else:
                batch.append(item)
                if isinstance(fn, SaveWrite):
                    saving.add(saga_id)
        return batch, held

    async def _commit_bulk(self, batch) -> None:
        """PostgreSQL: the batch's creates, then its saves, each group as one statement.

        A single statement is atomic on its own, so it needs no BEGIN and COMMIT round trips;
        the sagas in a batch are independent of one another. With both groups, the two
        statements go in one pipeline: one round trip and one commit. If that fails, each group
        goes on its own; if its statement fails, the ordinary way: one transaction, then write
        by write.
        """
        groups = [(kind, [item for item in batch if isinstance(item[0], kind)]) for kind in (CreateWrite, SaveWrite)]
        groups = [(kind, group) for kind, group in groups if group]
        if len(groups) == 2 and await self._commit_pipelined(groups):
            return
        for kind, group in groups:
            try:
                conn = await self._bulk_connection()
                raw = (await conn.get_raw_connection()).driver_connection
                results = await self._results(conn, kind, group, await kind.bulk(raw, _fns(group), self._notes(group)))
            except Exception:
                log.warning("bulk saga write failed; writing the batch the ordinary way", exc_info=True)
                await self._drop_bulk_connection()
                await self._commit(group)
                continue
            self._resolve(group, results)

    async def _commit_pipelined(self, groups) -> bool:
        """Creates then saves, in one round trip and one implicit transaction; False if it failed.

        The saves come after the creates in the same transaction, so a save finds a row created
        in the same batch. On failure the transaction rolled back whole, and the caller writes
        each group on its own.
        """
        try:
            conn = await self._bulk_connection()
            raw = (await conn.get_raw_connection()).driver_connection
            async with raw.pipeline():
                cursors = [await kind.send(raw, _fns(group), self._notes(group)) for kind, group in groups]
                rows = [await cursor.fetchall() for cursor in cursors]
            results = [
                await self._results(conn, kind, group, kind.results(_fns(group), found))
                for (kind, group), found in zip(groups, rows)
            ]
        except Exception:
            log.warning("pipelined saga writes failed; writing each group on its own", exc_info=True)
            await self._drop_bulk_connection()
            return False
        for (_, group), result in zip(groups, results):
            self._resolve(group, result)
        return True

    def _notes(self, group) -> str:
        return "\n".join(_payloads(self.origin, [tag[0] for _, _, tag in group if tag is not None]))

    @staticmethod
    async def _results(conn: AsyncConnection, kind: type, group, results: Any) -> list[Any]:
        if kind is CreateWrite:  # None for a saga created, else the row holding its request_id
            return [None if fn.saga_id in results else await fn.existing(conn) for fn, _, _ in group]
        return results

    async def _bulk_connection(self) -> AsyncConnection:
        """The writer's own autocommit connection, kept between batches (no pool checkout each)."""
        if self._held is None:
            self._held = await self.autocommit.connect()
        return self._held

    async def _drop_bulk_connection(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(Exception):
                await held.invalidate()
                await held.close()

    async def _commit(self, batch) -> None:
        try:
            async with self.engine.begin() as conn:
                results = [await fn(conn) for fn, _, _ in batch]
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
        self._resolve(batch, results)

    def _resolve(self, batch, results: list[Any]) -> None:
        for (_, future, _), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
        if self.on_commit:
            self.on_commit([tag for (fn, _, tag), result in zip(batch, results) if tag is not None and _ok(fn, result)])

    async def _notify(self, conn: AsyncConnection, saga_ids: list[str]) -> None:
        """On PostgreSQL, wake watchers on every replica (delivered at commit)."""
        if conn.dialect.name != "postgresql":
            return
        for payload in _payloads(self.origin, saga_ids):
            await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": payload})


def _fns(group) -> list[Any]:
    return [fn for fn, _, _ in group]


def _payloads(origin: str, saga_ids: list[str]) -> list[str]:
    """``NOTIFY`` payloads naming the sagas written, each under PostgreSQL's 8000-byte limit.

    A payload names this replica first so that its own listener can skip what it has already
    delivered from memory.
    """
    payloads: list[str] = []
    payload: list[str] = [origin]
    size = len(origin)
    for saga_id in dict.fromkeys(saga_ids):
        if size + len(saga_id) + 1 > 7000:
            payloads.append(",".join(payload))
            payload, size = [origin], len(origin)
        payload.append(saga_id)
        size += len(saga_id) + 1
    if len(payload) > 1:
        payloads.append(",".join(payload))
    return payloads


def _ok(write: Any, result: Any) -> bool:
    """Whether the write happened: a save still held its lease, a create found its request_id free."""
    if isinstance(result, SaveResult):
        return result.ok
    if isinstance(write, CreateWrite):
        return result is None
    return True


# Wakes other replicas' watchers; evaluated once per statement, and only if a row was written.
# The payloads come as one text, a line each (saga ids and the origin are hex): a scalar
# parameter, like the rows' values, which psycopg dumps far faster than an array.
_NOTIFY = (
    "(SELECT count(pg_notify('" + NOTIFY_CHANNEL + "', p)) FROM unnest(string_to_array(%s::text, E'\\n')) AS p)"
)

_SAVE_COLUMNS = ("saga_id", "owner", "status", "state", "updated_at", "last_seq")
_SAVE_TYPES = ("text", "text", "integer", "bytea", "bigint", "bigint")
_CREATE_COLUMNS = (
    "saga_id", "request_id", "request_hash", "status", "priority", "is_urgent", "state", "last_seq", "owner",
    "lease_until", "deadline", "trace_context", "created_at",
)
_CREATE_TYPES = (
    "text", "text", "text", "integer", "integer", "boolean", "bytea", "bigint", "text", "bigint", "bigint", "text",
    "bigint",
)
_EVENT_COLUMNS = ("saga_id", "seq", "event")
_EVENT_TYPES = ("text", "bigint", "bytea")


def _padded(count: int) -> int:
    """Rows are padded with NULL rows to a power of two, so that few statement texts exist."""
    n = 1
    while n < count:
        n *= 2
    return n


@functools.lru_cache(maxsize=256)
def _values(name: str, columns: tuple[str, ...], types: tuple[str, ...], rows: int) -> str:
    """``name(columns) AS (VALUES ...)`` with ``rows`` rows of typed placeholders.

    Scalar parameters rather than arrays: psycopg dumps arrays element by element in Python,
    about five times slower than it dumps the same values as separate parameters.
    """
    row = "(" + ", ".join(f"%s::{t}" for t in types) + ")"
    return f"{name}({', '.join(columns)}) AS (VALUES {', '.join([row] * rows)})"


def _params(rows: list[tuple[Any, ...]], width: int) -> tuple[int, list[Any]]:
    n = _padded(len(rows))
    return n, [v for row in rows for v in row] + [None] * (width * (n - len(rows)))


def _numbered(sql: str) -> str:
    """``%s`` placeholders as ``$1, $2, ...``, for a raw cursor.

    psycopg parses a ``%s`` query on every execution once it is longer than its 4 KB cache
    limit, as these statements are; with numbered placeholders it sends the text as it is.
    """
    parts = sql.split("%s")
    return "".join(part + (f"${i}" if i < len(parts) else "") for i, part in enumerate(parts, 1))


@functools.lru_cache(maxsize=256)
def _bulk_save_sql(saves: int, events: int) -> str:
    return _numbered(f"""
    WITH {_values("v", _SAVE_COLUMNS, _SAVE_TYPES, saves)},
    u AS (
        UPDATE sagas AS s
           SET status = v.status, state = v.state, updated_at = v.updated_at,
               last_seq = GREATEST(s.last_seq, v.last_seq)
          FROM v
         WHERE s.saga_id = v.saga_id AND s.owner = v.owner
        RETURNING s.saga_id, s.cancel_requested
    ),
    {_values("x", _EVENT_COLUMNS, _EVENT_TYPES, events)},
    e AS (
        INSERT INTO saga_events (saga_id, seq, event)
        SELECT x.saga_id, x.seq, x.event FROM x WHERE x.saga_id IN (SELECT saga_id FROM u)
    )
    SELECT u.saga_id, u.cancel_requested, {_NOTIFY} FROM u
    """)


@functools.lru_cache(maxsize=256)
def _bulk_create_sql(creates: int, events: int) -> str:
    return _numbered(f"""
    WITH {_values("v", _CREATE_COLUMNS, _CREATE_TYPES, creates)},
    i AS (
        INSERT INTO sagas (saga_id, request_id, request_hash, status, priority, is_urgent, state, last_seq,
                           cancel_requested, owner, lease_until, deadline, trace_context, created_at, updated_at)
        SELECT v.saga_id, v.request_id, v.request_hash, v.status, v.priority, v.is_urgent, v.state, v.last_seq,
               false, v.owner, v.lease_until, v.deadline, v.trace_context, v.created_at, v.created_at
          FROM v
         WHERE v.saga_id IS NOT NULL
        ON CONFLICT DO NOTHING
        RETURNING saga_id
    ),
    {_values("x", _EVENT_COLUMNS, _EVENT_TYPES, events)},
    e AS (
        INSERT INTO saga_events (saga_id, seq, event)
        SELECT x.saga_id, x.seq, x.event FROM x WHERE x.saga_id IN (SELECT saga_id FROM i)
    )
    SELECT i.saga_id, {_NOTIFY} FROM i
    """)


def _event_rows(writes: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [(e["saga_id"], e["seq"], e["event"]) for w in writes for e in w.events]


class CreateWrite:
    """A new saga's row and first events; nothing if its request_id is taken."""

    def __init__(self, values: dict[str, Any], events: Sequence[pb.SagaEvent]) -> None:
        self.saga_id = values["saga_id"]
        self.values = values
        self.events = [{"saga_id": self.saga_id, "seq": e.seq, "event": e.SerializeToString()} for e in events]

    async def __call__(self, conn: AsyncConnection):
        """None if created, else the row that holds the request_id."""
        inserted = await conn.execute(insert_ignore(conn, S).values(**self.values).returning(S.c.saga_id))
        if inserted.first() is None:
            return await self.existing(conn)
        if self.events:
            await conn.execute(E.insert(), self.events)
        return None

    async def existing(self, conn: AsyncConnection):
        return (await conn.execute(select(S).where(S.c.request_id == self.values["request_id"]))).one()

    @staticmethod
    async def bulk(raw: Any, writes: list["CreateWrite"], notes: str) -> set[str]:
        """The ids of the sagas inserted (PostgreSQL, autocommit)."""
        return CreateWrite.results(writes, await (await CreateWrite.send(raw, writes, notes)).fetchall())

    @staticmethod
    async def send(raw: Any, writes: list["CreateWrite"], notes: str) -> Any:
        """Execute the statement (queued only, in a pipeline); its rows go to ``results``."""
        n, params = _params([tuple(w.values[c] for c in _CREATE_COLUMNS) for w in writes], len(_CREATE_COLUMNS))
        m, event_params = _params(_event_rows(writes), len(_EVENT_COLUMNS))
        return await psycopg.AsyncRawCursor(raw).execute(_bulk_create_sql(n, m), [*params, *event_params, notes])

    @staticmethod
    def results(writes: list["CreateWrite"], rows: list[Any]) -> set[str]:
        return {row[0] for row in rows}


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
    async def bulk(raw: Any, writes: list["SaveWrite"], notes: str) -> list["SaveResult"]:
        """Every save in one statement (PostgreSQL, autocommit); events only where the guard held."""
        return SaveWrite.results(writes, await (await SaveWrite.send(raw, writes, notes)).fetchall())

    @staticmethod
    async def send(raw: Any, writes: list["SaveWrite"], notes: str) -> Any:
        """Execute the statement (queued only, in a pipeline); its rows go to ``results``."""
        rows = [
            (w.saga_id, w.owner, w.values["status"], w.values["state"], w.values["updated_at"],
             w.values.get("last_seq", 0))
            for w in writes
        ]
        n, params = _params(rows, len(_SAVE_COLUMNS))
        m, event_params = _params(_event_rows(writes), len(_EVENT_COLUMNS))
        return await psycopg.AsyncRawCursor(raw).execute(_bulk_save_sql(n, m), [*params, *event_params, notes])

    @staticmethod
    def results(writes: list["SaveWrite"], rows: list[Any]) -> list["SaveResult"]:
        saved = {row[0]: bool(row[1]) for row in rows}
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
    # A saga started here: its insert's result (None once committed, else the row holding its
    # request_id). The driver confirms it before the first step that changes anything.
    created: asyncio.Future | None = None


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
        # Reads need no transaction: on PostgreSQL that saves the BEGIN and ROLLBACK round trips.
        self.reads = engine if self.sqlite else engine.execution_options(isolation_level="AUTOCOMMIT")
        self.writer = GroupCommitter(engine, on_commit=on_commit, autocommit=self.reads)

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
                state=saga.SerializeToString(),
                last_seq=last_seq,
                cancel_requested=False,
                owner=owner,
                lease_until=now + lease_ms,
                deadline=deadline,
                trace_context=trace_context,
                created_at=now,
                updated_at=now,
            ),
            events,
        )
        found = self.writer.submit(write, tag=(saga.saga_id, tuple(events)))
        row = SagaRow(saga, saga.status, req_hash, last_seq, False, owner, now + lease_ms, deadline, trace_context, found)

        async def existing() -> SagaRow | None:
            other = await found
            return None if other is None else _row(other)

        return row, existing()

    def save(self, saga: pb.Saga, events: Sequence[pb.SagaEvent], *, owner: str) -> asyncio.Future:
        """Persist the saga's new state and events if ``owner`` still holds it.

        The state is serialized now; the returned future gives the SaveResult once committed.
        The lease is not touched: ``renew`` keeps it. A save then changes no indexed column
        unless the status changes, so PostgreSQL updates the row in place (a HOT update, with
        the table's free space per page) without writing to any of its four indexes.
        """
        values = dict(status=saga.status, state=saga.SerializeToString(), updated_at=now_ms())
        if events:
            values["last_seq"] = events[-1].seq
        write = SaveWrite(saga.saga_id, owner, values, events)
        return self.writer.submit(write, tag=(saga.saga_id, tuple(events)) if events else None)

    async def load(self, saga_id: str) -> SagaRow | None:
        async with self.reads.connect() as conn:
            row = (await conn.execute(select(S).where(S.c.saga_id == saga_id))).first()
        return _row(row) if row else None

    async def list(self, status: int, offset: int, limit: int) -> list[SagaRow]:
        query = select(S).order_by(S.c.created_at.desc(), S.c.saga_id).offset(offset).limit(limit)
        if status:
            query = query.where(S.c.status == status)
        async with self.reads.connect() as conn:
            return [_row(r) for r in await conn.execute(query)]

    async def events_after(self, saga_id: str, after_seq: int, limit: int = 1000) -> list[pb.SagaEvent]:
        async with self.reads.connect() as conn:
            rows = await conn.execute(
                select(E.c.event)
                .where(E.c.saga_id == saga_id, E.c.seq > after_seq)
                .order_by(E.c.seq)
                .limit(limit)
            )
            return [pb.SagaEvent.FromString(r.event) for r in rows]

    async def status_of(self, saga_id: str) -> int | None:
        async with self.reads.connect() as conn:
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

        # The empty event list tells watchers to read the database again.
        return await self.writer.run(write, tag=(saga_id, ()))

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

        return await self.writer.run(write, tag=(saga_id, ()))

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
        async with self.reads.connect() as conn:
            rows = await conn.execute(select(S.c.status, func.count()).group_by(S.c.status))
            return {status: n for status, n in rows}


