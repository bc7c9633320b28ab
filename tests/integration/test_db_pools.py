"""The connection budget: the pools close what a load opened once it is no longer used."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy import text

from invsaga.runtime.db import Database, conninfo, create_engine
from tests.support import new_pg_database

IDLE = 0.3  # the pools' idle timeout here (seconds)


@pytest.fixture(scope="module")
def database_url() -> str:
    return new_pg_database()


def open_connections(url: str) -> int:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]


async def settles_at(url: str, expected: int, within: float = 20.0) -> int:
    """The connections open once they stop changing toward ``expected`` (or after ``within``)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while (found := open_connections(url)) != expected and loop.time() < end:
        await asyncio.sleep(0.1)
    return found


async def test_the_coordinators_engine_closes_connections_unused_for_the_idle_time_and_keeps_one(database_url):
    engine = create_engine(database_url, "public", pool_size=6, max_idle=IDLE)
    try:

        async def use() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(0.2)"))

        await asyncio.gather(*(use() for _ in range(6)))
        assert open_connections(database_url) == 6
        assert await settles_at(database_url, 1) == 1
        # What is left still serves, and a new burst opens what it needs again.
        await asyncio.gather(*(use() for _ in range(4)))
        assert open_connections(database_url) == 4
        assert await settles_at(database_url, 1) == 1
    finally:
        await engine.dispose()
    assert await settles_at(database_url, 0) == 0


async def test_a_participants_pool_closes_every_connection_unused_through_an_idle_period_and_keeps_one(database_url):
    db = await Database(database_url, "public", pool_size=5, max_idle=IDLE).open()
    try:

        async def use() -> None:
            async with db.connection() as conn:
                await conn.execute("SELECT pg_sleep(0.2)")

        await asyncio.gather(*(use() for _ in range(5)))
        assert open_connections(database_url) > 1  # the pool grows in the background: some of five
        assert await settles_at(database_url, 1) == 1
        assert (await db.fetchone("SELECT 41 + 1 AS answer")).answer == 42
    finally:
        await db.close()


async def test_the_group_writers_own_connection_is_closed_once_unused_for_the_idle_time(database_url):
    from coordinator.commit import GroupCommitter

    engine = create_engine(database_url, "public", pool_size=2, max_idle=IDLE)
    writer = GroupCommitter(engine)
    writer.start()
    try:
        held, _ = await writer._bulk_connection()  # as a batch of saves takes it
        await held.execute(text("SELECT 1"))
        writer._wakeup.set()  # the batch done: the writer goes back to waiting
        assert open_connections(database_url) == 1
        assert await settles_at(database_url, 0) == 0
        assert writer._held is None
        # The next batch opens one again.
        assert await writer.run(lambda conn: conn.scalar(text("SELECT 41 + 1"))) == 42
    finally:
        await writer.stop()
        await engine.dispose()
    assert await settles_at(database_url, 0) == 0
