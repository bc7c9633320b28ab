"""PostgreSQL, the one database engine, the same for every process.

Each service lives in its own schema of one database, chosen through ``search_path``, so
table definitions and SQL carry no schema name. With no URL configured the process runs on
the embedded server of its data directory (``invsaga.runtime.embedded``).

A participant's store talks to its schema through ``Database``: a pool of psycopg
connections left in autocommit, plain SQL text (constant texts, which psycopg prepares once
per connection), a transaction when a store asks for one, and the statement pipe for the
barrier's single statements. SQLAlchemy describes the tables (``models.py``) for Alembic;
the coordinator's saga store still uses its Core statements.

Connections are a budget the whole deployment shares (PostgreSQL's ``max_connections``): each
pool opens connections as its load needs them, up to ``pool_size``, and closes those left
unused for ``max_idle`` seconds, down to one (``INVSAGA_DB_POOL_SIZE``,
``INVSAGA_DB_IDLE_TIMEOUT``; docs/deploy.md adds them up per replica set).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Coroutine, TypeVar, cast

import psycopg
from alembic import command
from alembic.config import Config
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import greenlet_spawn

from invsaga.runtime.config import Settings
from invsaga.runtime.pipe import StatementPipe

T = TypeVar("T")

# Defaults of INVSAGA_DB_POOL_SIZE (participants, coordinator) and INVSAGA_DB_IDLE_TIMEOUT.
PARTICIPANT_POOL_SIZE = 6
COORDINATOR_POOL_SIZE = 10
IDLE_TIMEOUT = 30.0


def conninfo(database_url: str) -> str:
    """The libpq URI of a SQLAlchemy URL (``postgresql+psycopg://...`` → ``postgresql://...``)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _options(schema: str) -> str:
    return f"-c search_path={schema}"


class _ShrinkingPool(AsyncConnectionPool[psycopg.AsyncConnection[Any]]):  # rows: namedtuple_row, untyped
    """psycopg's pool, shrinking by every connection left unused through a ``max_idle`` period.

    psycopg_pool closes one such connection per period, so a pool grown to twelve takes eleven
    periods to come back to one; this one closes them all at the end of the period.
    """

    async def _shrink_pool(self) -> None:  # psycopg_pool 3.3 (pinned), closing up to nconns_min
        to_close = []
        async with self._lock:
            unused = self._nconns_min  # the fewest connections waiting in the pool during the period
            self._nconns_min = len(self._pool)
            while self._nconns > self._min_size and unused > 0 and self._pool:
                to_close.append(self._pool.popleft())
                self._nconns -= 1
                self._nconns_min -= 1
                unused -= 1
        for conn in to_close:
            await self._close_connection(conn)


class Database:
    """One service's schema: autocommit connections, transactions, and the statement pipe."""

    def __init__(
        self, database_url: str, schema: str, *, pool_size: int = PARTICIPANT_POOL_SIZE, max_idle: float = IDLE_TIMEOUT
    ) -> None:
        self.schema = schema
        self.pool = _ShrinkingPool(
            conninfo(database_url),
            kwargs={"options": _options(schema), "autocommit": True, "row_factory": namedtuple_row},
            min_size=1,
            max_size=pool_size,
            max_idle=max_idle,
            timeout=60,
            open=False,
            name=f"db-{schema}",
        )
        self.pipe = StatementPipe(self.pool)

    async def open(self) -> "Database":
        await self.pool.open()
        return self

    async def close(self) -> None:
        await self.pool.close()

    def connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """An autocommit connection: each statement commits on its own."""
        return self.pool.connection()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection inside one transaction, committed when the block ends without error."""
        async with self.pool.connection() as conn:
            async with conn.transaction():
                yield conn

    async def fetch(self, sql: str, params: Any = None) -> list[Any]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    async def fetchone(self, sql: str, params: Any = None) -> Any:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchone()

    async def execute(self, sql: str, params: Any = None) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(sql, params)


class IdleClosingPool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio pool, last in first out, closing connections left unused ``max_idle`` seconds.

    Last in first out, the connections a lighter load no longer needs stay at the bottom of the
    pool, unused; a timer set when a connection comes back closes those unused for ``max_idle``
    (all but ``min_idle`` of them). SQLAlchemy itself never closes an idle pooled connection.
    """

    max_idle: float | None = None
    min_idle = 1
    _sweep: asyncio.TimerHandle | None = None

    def _do_return_conn(self, record: Any) -> None:
        record.info["invsaga_idle_since"] = time.monotonic()
        super()._do_return_conn(record)
        if self.max_idle is not None and self._sweep is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # returned outside the event loop (at exit): nothing to time
                return
            self._sweep = loop.call_later(self.max_idle, self._sweep_soon, loop)

    def _sweep_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep_task = loop.create_task(greenlet_spawn(self._close_idle))  # closing awaits the driver

    def _close_idle(self) -> None:
        self._sweep = None
        assert self.max_idle is not None
        now = time.monotonic()
        waiting = []  # newest first
        while True:
            try:
                waiting.append(self._pool.get_nowait())
            except Exception:  # sqlalchemy.util.queue.Empty
                break
        keep = [
            record
            for k, record in enumerate(waiting)
            if k < self.min_idle or now - record.info.get("invsaga_idle_since", now) < self.max_idle
        ]
        for record in reversed(keep):  # back in their order, oldest at the bottom
            self._pool.put_nowait(record)
        kept = {id(record) for record in keep}
        for record in waiting:
            if id(record) not in kept:
                try:
                    record.close()
                finally:
                    self._dec_overflow()
        if self.checkedin() > self.min_idle:  # some went back in recently: look again when they would expire
            oldest = min([record.info.get("invsaga_idle_since", now) for record in keep] or [now])
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(max(0.05, oldest + self.max_idle - now), self._sweep_soon, loop)

    def recreate(self) -> "IdleClosingPool":
        # SQLAlchemy's recreate builds ``self.__class__``; its annotation names only the base.
        pool = cast(IdleClosingPool, super().recreate())
        pool.max_idle, pool.min_idle = self.max_idle, self.min_idle
        return pool


def create_engine(
    database_url: str, schema: str, *, pool_size: int = COORDINATOR_POOL_SIZE, max_idle: float | None = IDLE_TIMEOUT
) -> AsyncEngine:
    """A SQLAlchemy engine on the service's schema (migrations and the coordinator's store)."""
    connect_args = {"options": _options(schema), "autocommit": False}
    engine = create_async_engine(
        database_url,
        poolclass=IdleClosingPool,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=60,
        pool_pre_ping=False,
        pool_use_lifo=True,
        connect_args=connect_args,
    )
    cast(IdleClosingPool, engine.sync_engine.pool).max_idle = max_idle  # the poolclass above
    return engine


def _alembic_config(script_location: str, connection: Connection, metadata: MetaData) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.attributes["connection"] = connection
    cfg.attributes["target_metadata"] = metadata
    return cfg


async def migrate(database_url: str, schema: str, script_location: str, metadata: MetaData) -> None:
    """Bring the service's schema up to date (safe when several replicas start at once)."""
    engine = create_engine(database_url, schema, pool_size=1, max_idle=None)
    try:
        async with engine.begin() as conn:
            # Serialise concurrent migrations of the same schema across replicas.
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schema})
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.run_sync(
                lambda sync_conn: command.upgrade(_alembic_config(script_location, sync_conn, metadata), "head")
            )
    finally:
        await engine.dispose()


def run_env(context: Any) -> None:
    """Body of every service's Alembic ``env.py``: run on the connection ``migrate`` hands over."""
    context.configure(
        connection=context.config.attributes["connection"],
        target_metadata=context.config.attributes.get("target_metadata"),
    )
    with context.begin_transaction():
        context.run_migrations()


def migrations_of(models_file: str) -> str:
    """The Alembic scripts of the service whose ``models.py`` is ``models_file``."""
    return str(Path(models_file).parent / "migrations")


def _pool_settings(settings: Any) -> dict[str, Any]:
    """Pool size and idle timeout from the settings, the defaults where they name none."""
    return {
        "pool_size": getattr(settings, "db_pool_size", Settings.db_pool_size),
        "max_idle": getattr(settings, "db_idle_timeout", Settings.db_idle_timeout),
    }


async def open_service_database(settings: Any, metadata: MetaData, models_file: str) -> Database:
    """Migrate the service's schema to head, then open its ``Database``."""
    await migrate(settings.database_url, settings.service, migrations_of(models_file), metadata)
    return await Database(settings.database_url, settings.service, **_pool_settings(settings)).open()


async def open_service_engine(settings: Any, metadata: MetaData, models_file: str) -> AsyncEngine:
    """Migrate the service's schema to head, then return a SQLAlchemy engine on it (the coordinator)."""
    await migrate(settings.database_url, settings.service, migrations_of(models_file), metadata)
    return create_engine(settings.database_url, settings.service, **_pool_settings(settings))


async def finish_even_if_cancelled(work: Coroutine[Any, Any, T]) -> T:
    """Run a short database statement to its end even when shutdown cancels the caller.

    A statement cancelled half-way leaves the psycopg connection in a state in which
    returning it to the pool hangs, and the process would miss its shutdown deadline.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise
