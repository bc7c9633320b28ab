"""Group commit: the writes of many sagas, committed together.

The database's commit is the cost that matters, and sagas in flight together share it. A
batch's creates and saves each go as one statement (``coordinator.writes``); anything else
submitted runs in one ordinary transaction per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, Awaitable, Callable, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coordinator.writes import BULK, NOTIFY_CHANNEL, CreateWrite, SaveResult, SaveWrite

log = logging.getLogger("invsaga.coordinator.store")
T = TypeVar("T")


class GroupCommitter:
    """Runs submitted write functions together, one batch at a time."""

    def __init__(self, engine: AsyncEngine, max_batch: int = 512, on_commit: Callable[[list[Any]], None] | None = None):
        self.engine = engine
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.origin = uuid.uuid4().hex[:12]
        self._queue: list[tuple[Callable[[AsyncConnection], Awaitable[Any]], asyncio.Future, Any]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._held: AsyncConnection | None = None
        # The held connection is closed once unused this long (its libpq buffers, grown to the
        # largest batch it sent, go with it): the pool's idle timeout, INVSAGA_DB_IDLE_TIMEOUT.
        self.idle: float | None = getattr(engine.sync_engine.pool, "max_idle", None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_held()

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
            if self._held is not None and self.idle is not None:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self.idle)
                except asyncio.TimeoutError:
                    await self._close_held()
                    continue
            else:
                await self._wakeup.wait()
            # Let what woke the writer go first: a driver queues its save and then sends the
            # next step's call, which should not wait behind the write's preparation.
            await asyncio.sleep(0)
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._next_batch()
                bulk = [item for item in batch if isinstance(item[0], BULK)]
                rest = [item for item in batch if not isinstance(item[0], BULK)]
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
        batch: list[Any] = []
        held: list[Any] = []
        saving: set[Any] = set()
        blocked: set[Any] = set()
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
        """The batch's creates, then its saves, each group as one statement.

        A single statement is atomic on its own, so it needs no BEGIN and COMMIT round trips;
        the sagas in a batch are independent of one another. With both groups, the two
        statements go in one pipeline: one round trip and one commit. If that fails, each group
        goes on its own; if its statement fails, the ordinary way: one transaction, then write
        by write.
        """
        groups = [(kind, [item for item in batch if isinstance(item[0], kind)]) for kind in BULK]
        groups = [(kind, group) for kind, group in groups if group]
        if len(groups) == 2 and await self._commit_pipelined(groups):
            return
        for kind, group in groups:
            try:
                conn, raw = await self._bulk_connection()
                rows = await (await kind.send(raw, _fns(group), self._notes(group))).fetchall()
                results = await self._results(conn, kind, group, kind.results(_fns(group), rows))
            except Exception:
                log.warning("bulk saga write failed; writing the batch the ordinary way", exc_info=True)
                await self._close_held()
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
            conn, raw = await self._bulk_connection()
            assert raw is not None  # a live psycopg connection
            async with raw.pipeline():
                cursors = [await kind.send(raw, _fns(group), self._notes(group)) for kind, group in groups]
                rows = [await cursor.fetchall() for cursor in cursors]
            results = [
                await self._results(conn, kind, group, kind.results(_fns(group), found))
                for (kind, group), found in zip(groups, rows)
            ]
        except Exception:
            log.warning("pipelined saga writes failed; writing each group on its own", exc_info=True)
            await self._close_held()
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

    async def _bulk_connection(self) -> tuple[AsyncConnection, Any]:
        """The writer's own autocommit connection, kept between batches (no pool checkout each),
        and the psycopg connection under it."""
        if self._held is None:
            self._held = await self.autocommit.connect()
        return self._held, (await self._held.get_raw_connection()).driver_connection

    async def _close_held(self) -> None:
        """Close the held connection itself (not back to the pool, where it would keep its buffers)."""
        held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(Exception):
                await held.invalidate()
                await held.close()

    async def _commit(self, batch) -> None:
        try:
            async with self.engine.begin() as conn:
                results = [await fn(conn) for fn, _, _ in batch]
                # Wakes watchers on every replica (delivered at commit).
                for payload in _payloads(self.origin, [tag[0] for _, _, tag in batch if tag is not None]):
                    await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": payload})
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
