"""Database engines and migrations, the same for every process.

SQLite (aiosqlite) by default, one file per service; PostgreSQL (psycopg 3) in production,
each service in its own schema of one database (chosen through ``search_path``, so table
definitions and SQL carry no schema name). Hot paths use SQLAlchemy Core on these engines.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext  # noqa: F401  (re-exported for env.py)
from sqlalchemy import MetaData, Select, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(database_url: str, schema: str, *, pool_size: int = 12) -> AsyncEngine:
    """An engine for one service: ``schema`` is its PostgreSQL schema (ignored on SQLite)."""
    if is_sqlite(database_url):
        path = make_url(database_url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection per process: SQLite serialises writers anyway, and a single
        # connection makes every transaction wait its turn instead of failing with "locked".
        engine = create_async_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=120)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args = {"options": f"-c search_path={schema}", "autocommit": False}
    engine = create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=60,
        pool_pre_ping=False,
        connect_args=connect_args,
    )
    _connect_args[engine] = connect_args
    return engine


_connect_args: weakref.WeakKeyDictionary[AsyncEngine, dict[str, Any]] = weakref.WeakKeyDictionary()
_raw_pools: dict[AsyncEngine, Any] = {}
_raw_opening: dict[AsyncEngine, asyncio.Future] = {}


async def raw_pool(engine: AsyncEngine):
    """A psycopg pool beside ``engine``'s, of connections left in autocommit, for hot paths.

    Opened on first use with the engine's own connection arguments (schema included). Hot
    paths that run their own BEGIN/COMMIT (or a single statement) take connections here, which
    saves the SQLAlchemy checkout and the autocommit switch on every call.
    """
    pool = _raw_pools.get(engine)
    if pool is not None:
        return pool
    opening = _raw_opening.get(engine)
    if opening is None:
        opening = _raw_opening[engine] = asyncio.ensure_future(_open_raw_pool(engine))
    try:
        return await asyncio.shield(opening)
    except BaseException:
        if opening.done() and _raw_opening.get(engine) is opening:
            del _raw_opening[engine]  # failed to open: the next caller tries again
        raise


async def _open_raw_pool(engine: AsyncEngine):
    from psycopg_pool import AsyncConnectionPool

    _, kwargs = engine.dialect.create_connect_args(engine.url)
    pool = AsyncConnectionPool(
        kwargs={**kwargs, **_connect_args.get(engine, {}), "autocommit": True},
        min_size=1,
        max_size=engine.pool.size(),
        timeout=60,
        open=False,
        name=f"raw-{engine.url.database}",
    )
    await pool.open()
    _raw_pools[engine] = pool
    _raw_opening.pop(engine, None)
    return pool


async def close_raw_pools() -> None:
    pools = list(_raw_pools.values())
    _raw_pools.clear()
    _raw_opening.clear()
    for pool in pools:
        await pool.close()


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
            if not is_sqlite(database_url):
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
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=context.config.attributes.get("target_metadata"),
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def load_with_children(
    conn: AsyncConnection,
    parents: Select,
    parent_key: Any,
    children: Select,
    child_key: Any,
    *,
    where: Any = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[tuple[Any, list[Any]]]:
    """A page of ``parents`` (filtered by ``where``) with their child rows: two queries in all.

    ``children`` is the ordered child query; ``child_key`` is its column naming the parent's
    ``parent_key``.
    """
    if where is not None:
        parents = parents.where(where)
    parents = parents.offset(offset)
    if limit is not None:
        parents = parents.limit(limit)
    rows = (await conn.execute(parents)).all()
    if not rows:
        return []
    grouped: dict[Any, list[Any]] = defaultdict(list)
    key = parent_key.key
    for child in await conn.execute(children.where(child_key.in_([getattr(r, key) for r in rows]))):
        grouped[getattr(child, child_key.key)].append(child)
    return [(row, grouped[getattr(row, key)]) for row in rows]


def insert_ignore(conn: AsyncConnection | Connection, table: Any):
    """``INSERT ... ON CONFLICT DO NOTHING`` for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


def upsert(conn: AsyncConnection | Connection, table: Any):
    """``INSERT`` whose ``on_conflict_do_update`` the caller completes, for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


async def wait_forever() -> None:  # pragma: no cover - used by sweepers in tests
    await asyncio.Event().wait()


async def open_service_database(settings: Any, metadata: MetaData, models_file: str) -> AsyncEngine:
    """Migrate the service's schema to head, then return its engine.

    ``models_file`` is the service's ``models.py``; its migrations live beside it.
    """
    script_location = str(Path(models_file).parent / "migrations")
    await migrate(settings.database_url, settings.service, script_location, metadata)
    return create_engine(settings.database_url, settings.service)
