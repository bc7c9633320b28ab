"""Single statements of concurrent calls, sent to PostgreSQL together.

A participant serves the requests of one ``ExecuteStream`` message at once, and each ends in
one autocommit statement (its effect and barrier row). Sent on separate connections, each
statement wakes a backend of its own and commits on its own. ``StatementPipe`` sends the
statements that are ready together on one connection, in one pipeline: one round trip, one
backend, one commit.

The statements of a group share one implicit transaction (PostgreSQL commits at the
pipeline's Sync), so the rows they lock stay locked until the last of them has run. If any of
them fails, the whole group rolled back, and each statement goes again on its own, so that
each caller gets its own statement's outcome exactly as if it had been sent alone (that
connection is closed: psycopg's cache of prepared statements may no longer match the
server's). Only one group is under way at a time: what arrives meanwhile forms the next group
(no timer). A statement that finds the pipe idle is sent at once by its caller, and what
arrives while it runs forms a group beside it. A caller that gives up before its group is
sent has nothing sent; one that gives up later does not stop its statement, and the barrier
row makes a late statement safe.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("invsaga.pipe")


class StatementPipe:
    def __init__(self, pool: Any, *, max_group: int = 32) -> None:
        self.pool = pool
        self.max_group = max_group
        self._queue: list[tuple[str, Any, asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self._sending: list[tuple[str, Any, asyncio.Future]] = []
        self._direct = False  # a statement sent at once is under way
        self.groups = 0  # groups sent, and the statements they carried
        self.grouped = 0
        self.failed = 0  # groups that failed (their statements then went alone)

    async def execute(self, sql: str, params: Any) -> None:
        """Run ``sql`` with ``params`` (no rows wanted); raise its error as psycopg would."""
        if self._task is None and not self._direct:  # (a queued statement always has a drain task)
            # Nothing under way: send it at once from the caller's own task. Statements that
            # arrive meanwhile form a group, sent beside it.
            self._direct = True
            try:
                await self._send(sql, params)
            finally:
                self._direct = False
            return
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((sql, params, future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
            self._task.add_done_callback(self._stopped)
        await future

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # the other requests of the same message reach here first
        while self._queue:
            group, self._queue = self._queue[: self.max_group], self._queue[self.max_group :]
            # A caller that gave up before its statement was sent: nothing to send.
            self._sending = group = [item for item in group if not item[2].done()]
            if len(group) > 1 and await self._together(group):
                continue
            for item in group:
                await self._alone(item)
        self._sending = []
        self._task = None  # no await since the queue was found empty: the next call starts a new drain

    def _stopped(self, task: asyncio.Task) -> None:
        """If the drain was cancelled (the loop shutting down), no caller is left waiting."""
        if not task.cancelled() and task.exception() is None:
            return
        if self._task is task:
            self._task = None
        error = ConnectionError("the statement pipe stopped")
        for _, _, future in [*self._sending, *self._queue]:
            if not future.done():
                future.set_exception(error)
        self._sending, self._queue = [], []

    async def _together(self, group: list[tuple[str, Any, asyncio.Future]]) -> bool:
        try:
            async with self.pool.connection() as conn:
                try:
                    async with conn.pipeline():
                        for sql, params, _ in group:
                            await conn.execute(sql, params)
                except Exception:
                    # psycopg may go on counting as prepared a statement whose PREPARE the
                    # aborted group skipped ("prepared statement _pg3_0 does not exist" on a
                    # later call): the connection is not used again, the pool opens another.
                    self.failed += 1
                    await conn.close()
                    raise
        except Exception as error:
            log.debug("a pipelined group of %d failed (%s); each goes again alone", len(group), error)
            return False
        self.groups += 1
        self.grouped += len(group)
        for _, _, future in group:
            if not future.done():
                future.set_result(None)
        return True

    async def _send(self, sql: str, params: Any) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(sql, params)

    async def _alone(self, item: tuple[str, Any, asyncio.Future]) -> None:
        sql, params, future = item
        try:
            await self._send(sql, params)
        except Exception as error:
            if not future.done():
                future.set_exception(error)
        else:
            if not future.done():
                future.set_result(None)
