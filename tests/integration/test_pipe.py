"""The statement pipe: concurrent statements together, each with its own outcome."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from invsaga.runtime.pipe import StatementPipe
from tests.support import new_pg_database

INSERT = "INSERT INTO t (k) VALUES (%(k)s)"


@pytest.fixture
async def pool():
    url = new_pg_database().replace("postgresql+psycopg://", "postgresql://", 1)
    pool = AsyncConnectionPool(url, kwargs={"autocommit": True}, min_size=1, max_size=1, open=False)
    await pool.open()
    async with pool.connection() as conn:
        await conn.execute("CREATE TABLE t (k int PRIMARY KEY)")
    yield pool
    await pool.close()


async def rows(pool) -> dict[int, str]:
    """Each key written, with the transaction that wrote it."""
    async with pool.connection() as conn:
        return dict(await (await conn.execute("SELECT k, xmin::text FROM t")).fetchall())


async def test_statements_made_at_once_go_as_one_group_in_one_transaction(pool):
    pipe = StatementPipe(pool)
    # The first finds the pipe idle and goes at once; the four made meanwhile go together.
    await asyncio.gather(*(pipe.execute(INSERT, {"k": k}) for k in range(5)))
    written = await rows(pool)
    assert sorted(written) == [0, 1, 2, 3, 4]
    assert len({written[k] for k in (1, 2, 3, 4)}) == 1  # one transaction: one round trip, one commit
    assert written[0] != written[1]
    assert (pipe.groups, pipe.grouped) == (1, 4)
    # Alone, a statement is sent at once, in a transaction of its own.
    await pipe.execute(INSERT, {"k": 5})
    assert (await rows(pool))[5] not in set(written.values())
    assert pipe.groups == 1


async def test_a_failing_statement_fails_alone_and_the_rest_of_its_group_commits(pool):
    pipe = StatementPipe(pool)
    await pipe.execute(INSERT, {"k": 1})
    # 9 goes at once; 0, 1 and 2 form a group, which fails on 1.
    keys = (9, 0, 1, 2)
    outcomes = await asyncio.gather(*(pipe.execute(INSERT, {"k": k}) for k in keys), return_exceptions=True)
    assert outcomes[0] is None and outcomes[1] is None and outcomes[3] is None
    assert isinstance(outcomes[2], psycopg.errors.UniqueViolation)  # the error it would have had alone
    assert sorted(await rows(pool)) == [0, 1, 2, 9]
    assert (pipe.groups, pipe.failed) == (0, 1)  # the group rolled back whole, then each statement went alone


async def test_after_a_failed_group_its_statement_still_runs_on_the_same_pool(pool):
    pipe = StatementPipe(pool)
    await pipe.execute(INSERT, {"k": 0})
    # The same statement often enough for psycopg to prepare it inside the group, after the
    # one that fails (20 goes at once, beside the group).
    keys = [20, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    outcomes = await asyncio.gather(*(pipe.execute(INSERT, {"k": k}) for k in keys), return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "UniqueViolation"] + ["NoneType"] * 8
    assert pipe.failed == 1
    for k in range(9, 12):  # alone, then together again
        await pipe.execute(INSERT, {"k": k})
    await asyncio.gather(*(pipe.execute(INSERT, {"k": k}) for k in range(12, 20)))
    assert sorted(await rows(pool)) == list(range(21))


async def test_a_caller_that_gave_up_before_its_group_left_has_nothing_sent(pool):
    pipe = StatementPipe(pool)
    first = asyncio.ensure_future(pipe.execute(INSERT, {"k": 0}))  # goes at once
    kept = asyncio.ensure_future(pipe.execute(INSERT, {"k": 1}))
    dropped = asyncio.ensure_future(pipe.execute(INSERT, {"k": 2}))
    await asyncio.sleep(0)  # 1 and 2 queued; the pipe has not sent them yet
    dropped.cancel()
    await asyncio.gather(first, kept)
    assert sorted(await rows(pool)) == [0, 1]


async def test_callers_are_not_left_waiting_when_the_pipe_stops(pool):
    pipe = StatementPipe(pool)
    waiting = [asyncio.ensure_future(pipe.execute(INSERT, {"k": k})) for k in range(3)]
    await asyncio.sleep(0)
    pipe._task.cancel()  # what shutting the event loop down does to it
    outcomes = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 1.0)
    assert outcomes[0] is None  # sent at once, by its caller
    assert all(isinstance(o, Exception) for o in outcomes[1:])
