"""The sub-transaction barrier (SPEC §5), written in the same transaction as the effect.

A row ``(saga_id, step, op)`` per Execute and Compensate, with the op that created it
(``origin``) and the serialized response:

- Execute runs its effect, then inserts ``(s, step, execute)`` with the response in one
  statement. Inserted: commit. Not inserted, because an earlier Execute is there: roll the
  effect back and return the stored result (a duplicate). Not inserted because a Compensate
  came first: roll back and refuse (FAILED_PRECONDITION).
- Compensate inserts ``(s, step, compensate)``; a duplicate returns the stored result.
  It then inserts ``(s, step, execute)`` with origin ``compensate``: if that succeeds no
  Execute ever ran, so this is a null compensation and the late Execute will be refused.

Writing the Execute row last costs no extra statement: the claim and the stored result are
one INSERT. A duplicate that races the first call waits on the row's key until the first
commits, then sees the conflict; a duplicate whose effect fails because the first call
already took the stock finds the first call's row and returns its result. Effects that fail
roll back with nothing recorded, so a retry runs again.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Awaitable, Callable, TypeVar

from google.protobuf.message import Message
from sqlalchemy import Column, DateTime, Integer, LargeBinary, MetaData, String, Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invsaga.common.v1 import common_pb2
from invsaga.runtime.db import insert_ignore, raw_pool
from invsaga.runtime.errors import FailedPrecondition, InvalidArgument
from invsaga.runtime.pipe import StatementPipe

M = TypeVar("M", bound=Message)

EXECUTE = "execute"
COMPENSATE = "compensate"


class _Duplicate(Exception):
    """Raised inside the transaction to roll an Execute's effect back."""


def barrier_table(metadata: MetaData) -> Table:
    return Table(
        "barrier",
        metadata,
        Column("saga_id", String(64), primary_key=True),
        Column("step", Integer, primary_key=True),
        Column("op", String(16), primary_key=True),
        Column("origin", String(16), nullable=False),
        Column("result", LargeBinary, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def _check_context(ctx: common_pb2.StepContext) -> None:
    if not ctx.saga_id or ctx.step == common_pb2.SAGA_STEP_UNSPECIFIED:
        raise InvalidArgument(
            "step context requires saga_id and step",
            violations=[("context.saga_id", "required"), ("context.step", "required")],
        )


_statements: dict[tuple[str, int], tuple[Any, Any, Any]] = {}


def _sql(conn: AsyncConnection, table: Table) -> tuple[Any, Any, Any]:
    """The barrier's three statements for this dialect and table, built once (bound per call)."""
    key = (conn.dialect.name, id(table))
    found = _statements.get(key)
    if found is None:
        where = (table.c.saga_id == bindparam("k_saga"), table.c.step == bindparam("k_step"), table.c.op == bindparam("k_op"))
        found = _statements[key] = (
            # RETURNING, not rowcount: SQLAlchemy reports rowcount -1 for INSERTs on psycopg.
            insert_ignore(conn, table).returning(table.c.saga_id),
            select(table.c.origin, table.c.result).where(*where),
            update(table).where(*where).values(result=bindparam("result")),
        )
    return found


async def _claim(
    conn: AsyncConnection, table: Table, ctx: common_pb2.StepContext, op: str, origin: str, result: bytes | None = None
) -> bool:
    inserted = await conn.execute(
        _sql(conn, table)[0],
        {"saga_id": ctx.saga_id, "step": ctx.step, "op": op, "origin": origin, "result": result},
    )
    return inserted.first() is not None


async def _stored(conn: AsyncConnection, table: Table, ctx: common_pb2.StepContext, op: str):
    return (await conn.execute(_sql(conn, table)[1], {"k_saga": ctx.saga_id, "k_step": ctx.step, "k_op": op})).first()


async def _read_stored(engine: AsyncEngine, table: Table, ctx: common_pb2.StepContext, op: str):
    async with engine.connect() as conn:
        return await _stored(conn, table, ctx, op)


def _replay(ctx: common_pb2.StepContext, stored, response_type: type[M]) -> M:
    origin, result = stored
    if origin == COMPENSATE:
        raise FailedPrecondition(
            f"saga {ctx.saga_id} step {common_pb2.SagaStep.Name(ctx.step)} was already compensated",
            reason="COMPENSATED_BEFORE_EXECUTE",
            metadata={"saga_id": ctx.saga_id},
        )
    return response_type.FromString(result or b"")


async def execute_once(
    engine: AsyncEngine,
    table: Table,
    ctx: common_pb2.StepContext,
    response_type: type[M],
    effect: Callable[[AsyncConnection], Awaitable[M]],
    on_commit: Callable[[M], None] | None = None,
) -> M:
    """Run ``effect`` at most once for ``(saga, step)``; duplicates get the first response.

    ``on_commit(response)`` runs only when this call's effect committed (not for a duplicate).
    """
    _check_context(ctx)
    try:
        async with engine.begin() as conn:
            response = await effect(conn)
            if not await _claim(conn, table, ctx, EXECUTE, EXECUTE, response.SerializeToString()):
                raise _Duplicate
    except Exception as error:
        # A duplicate, or an effect that failed: if the step has a row, that row is the answer.
        stored = await _read_stored(engine, table, ctx, EXECUTE)
        if stored is None:
            if isinstance(error, _Duplicate):  # the row went away in between: cannot happen
                raise RuntimeError("barrier row vanished") from None
            raise
        return _replay(ctx, stored, response_type)
    if on_commit is not None:
        on_commit(response)
    return response


_SELECT_PG = "SELECT origin, result FROM barrier WHERE saga_id = %s AND step = %s AND op = %s"


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


_BARRIER_COLUMNS_PG = "INSERT INTO barrier (saga_id, step, op, origin, result)"
_BARRIER_ROW_PG = "%(barrier_saga_id)s, %(barrier_step)s, 'execute', 'execute', %(barrier_result)s"


@functools.lru_cache(maxsize=64)
def _with_barrier(ctes: str, guard: str) -> str:
    """The barrier INSERT, under the effect's CTEs; with a guard, only where it holds."""
    prefix = f"WITH {ctes} " if ctes else ""
    if guard:
        return f"{prefix}{_BARRIER_COLUMNS_PG} SELECT {_BARRIER_ROW_PG} WHERE {guard}"
    return f"{prefix}{_BARRIER_COLUMNS_PG} VALUES ({_BARRIER_ROW_PG})"


async def execute_once_pg_statement(
    engine: AsyncEngine,
    ctx: common_pb2.StepContext,
    response_type: type[M],
    effect: Callable[[Any], Awaitable[tuple[M, str, dict[str, Any]]]],
    on_commit: Callable[[M], None] | None = None,
    *,
    guard: str = "",
    reads: bool = False,
) -> M:
    """``execute_once`` on PostgreSQL with psycopg directly: effect and barrier row in one statement.

    ``effect(conn)`` returns the response and its writes as data-modifying CTEs (``"a AS
    (INSERT ...), b AS (INSERT ...)"``, or ``""`` for none) with their named parameters; the
    barrier INSERT is the statement they belong to. A step that only reads passes
    ``reads=True`` and reads on ``conn`` (autocommit) first: what it read is its answer, and
    the barrier row keeps it for duplicates (``conn`` is None otherwise). ``guard`` is an SQL
    condition the row is inserted under, evaluated in the same statement (it may raise to
    abort it).

    One statement is atomic on its own, so on an autocommit connection it needs neither BEGIN
    nor COMMIT: one round trip, one execute. It goes through the engine's ``StatementPipe``,
    which sends it with those of the other calls under way (in one round trip and one commit)
    and answers it with its own outcome, as if it had gone alone. A duplicate (or a late
    Execute after a Compensate) fails on the barrier's key and takes the effect down with it;
    the stored row is then the answer (or COMPENSATED_BEFORE_EXECUTE), exactly as in
    ``execute_once``. An effect that fails, before or in the statement, is re-raised unless
    the step already has a row, which is then the answer.
    """
    _check_context(ctx)
    pool = await raw_pool(engine)
    try:
        if reads:
            async with pool.connection() as conn:
                response, ctes, params = await effect(conn)
        else:
            response, ctes, params = await effect(None)
        params["barrier_saga_id"] = ctx.saga_id
        params["barrier_step"] = ctx.step
        params["barrier_result"] = response.SerializeToString()
        await _pipe(engine, pool).execute(_with_barrier(ctes, guard), params)
    except Exception as error:
        async with pool.connection() as conn:
            return await _answer_pg(conn, ctx, response_type, error)
    if on_commit is not None:
        on_commit(response)
    return response


_pipes: weakref.WeakKeyDictionary[AsyncEngine, StatementPipe] = weakref.WeakKeyDictionary()


def _pipe(engine: AsyncEngine, pool: Any) -> StatementPipe:
    """The engine's statement pipe, on its raw pool (a new one if the pool was reopened)."""
    pipe = _pipes.get(engine)
    if pipe is None or pipe.pool is not pool:
        pipe = _pipes[engine] = StatementPipe(pool)
    return pipe


async def _answer_pg(conn: Any, ctx: common_pb2.StepContext, response_type: type[M], error: Exception) -> M:
    """After a failed Execute: the step's stored row is the answer, or the error stands."""
    import psycopg

    duplicate = isinstance(error, psycopg.errors.UniqueViolation) and error.diag.table_name == "barrier"
    cursor = await conn.execute(_SELECT_PG, (ctx.saga_id, ctx.step, EXECUTE))
    stored = await cursor.fetchone()
    if stored is None:
        if duplicate:  # the row went away in between: cannot happen
            raise RuntimeError("barrier row vanished") from None
        raise error
    return _replay(ctx, stored, response_type)


async def compensate_once(
    engine: AsyncEngine,
    table: Table,
    ctx: common_pb2.StepContext,
    response_type: type[M],
    effect: Callable[[AsyncConnection], Awaitable[M]],
    null_response: M,
) -> M:
    """Run ``effect`` at most once; with no Execute before it, record a null compensation."""
    _check_context(ctx)
    async with engine.begin() as conn:
        if not await _claim(conn, table, ctx, COMPENSATE, COMPENSATE):
            _, result = await _stored(conn, table, ctx, COMPENSATE)
            return response_type.FromString(result or b"")
        if await _claim(conn, table, ctx, EXECUTE, COMPENSATE):
            response = null_response
        else:
            response = await effect(conn)
        await conn.execute(
            _sql(conn, table)[2],
            {"k_saga": ctx.saga_id, "k_step": ctx.step, "k_op": COMPENSATE, "result": response.SerializeToString()},
        )
        return response


def create_barrier_table(op) -> None:
    """The barrier table as it was first created; every participant's initial migration calls this."""
    import sqlalchemy as sa

    op.create_table(
        "barrier",
        sa.Column("saga_id", sa.String(64), primary_key=True),
        sa.Column("step", sa.Integer, primary_key=True),
        sa.Column("op", sa.String(16), primary_key=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
