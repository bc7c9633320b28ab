"""PostgreSQL, the one database engine, the same for every process.

Each service lives in its own schema of one database, chosen through ``search_path``, so
table definitions and SQL carry no schema name. With no URL configured the process runs on
the embedded server of its data directory (``invsaga.runtime.embedded``).

A participant's store talks to its schema through ``Database``: a pool of psycopg
connections left in autocommit, plain SQL text (constant texts, which psycopg prepares once
per connection), a transaction when a store asks for one, and the statement pipe for the
barrier's single statements. SQLAlchemy describes the tables (``models.py``) for Alembic;
the coordinator's saga store still uses its Core statements.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import psycopg
from alembic import command
from alembic.config import Config
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from invsaga.runtime.pipe import StatementPipe


def conninfo(database_url: str) -> str:
    """The libpq URI of a SQLAlchemy URL (``postgresql+psycopg://...`` → ``postgresql://...``)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _options(schema: str) -> str:
    return f"-c search_path={schema}"


class Database:
    """One service's schema: autocommit connections, transactions, and the statement pipe."""

    def __init__(self, database_url: str, schema: str, *, pool_size: int = 12) -> None:
        self.schema = schema
        self.pool = AsyncConnectionPool(
            conninfo(database_url),
            kwargs={"options": _options(schema), "autocommit": True, "row_factory": namedtuple_row},
            min_size=1,
            max_size=pool_size,
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

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """An autocommit connection: each statement commits on its own."""
        async with self.pool.connection() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection]:
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


def create_engine(database_url: str, schema: str, *, pool_size: int = 12) -> AsyncEngine:
    """A SQLAlchemy engine on the service's schema (migrations and the coordinator's store)."""
    connect_args = {"options": _options(schema), "autocommit": False}
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=60,
        pool_pre_ping=False,
        connect_args=connect_args,
    )


def _alembic_config(script_location: str, connection: Connection, metadata: MetaData) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.attributes["connection"] = connection
    cfg.attributes["target_metadata"] = metadata
    return cfg


async def migrate(database_url: str, schema: str, script_location: str, metadata: MetaData) -> None:
    """Bring the service's schema up to date (safe when several replicas start at once)."""
    engine = create_engine(database_url, schema, pool_size=1)
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


async def open_service_database(settings: Any, metadata: MetaData, models_file: str) -> Database:
    """Migrate the service's schema to head, then open its ``Database``."""
    await migrate(settings.database_url, settings.service, migrations_of(models_file), metadata)
    return await Database(settings.database_url, settings.service).open()


async def open_service_engine(settings: Any, metadata: MetaData, models_file: str) -> AsyncEngine:
    """Migrate the service's schema to head, then return a SQLAlchemy engine on it (the coordinator)."""
    await migrate(settings.database_url, settings.service, migrations_of(models_file), metadata)
    return create_engine(settings.database_url, settings.service)
