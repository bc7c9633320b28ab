"""The sub-transaction barrier (SPEC §5): each step's effect and its barrier row, committed together.

A row ``(saga_id, step, op)`` per Execute and Compensate, with the op that created it
(``origin``) and the serialized response. Every participant calls one entry point,
``Barrier.run(ctx, op, effect)``, with one callback shape: ``effect(reader)`` reads what it
needs through ``reader`` and returns an ``Effect``: the response, and the writes that make it
true as data-modifying CTEs (``"a AS (INSERT ...), b AS (UPDATE ...)"``) with their named
parameters, optionally under a ``guard`` that must hold for any of it to commit.

- EXECUTE: ``reader`` runs on an autocommit connection, before anything is written (what it
  read is the step's answer, and the barrier row keeps it for duplicates). The writes and the
  barrier INSERT are one statement, atomic on its own, sent through the database's
  ``StatementPipe`` with those of the other calls under way (one round trip, one commit). A
  duplicate, or a late Execute after a Compensate, fails on the barrier's key and takes the
  writes down with it; the stored row is then the answer (or COMPENSATED_BEFORE_EXECUTE). A
  guard that does not hold aborts the statement: ``Refused`` unless the step already has a
  row, which is then the answer. An effect that fails is re-raised unless the step has a row.
- COMPENSATE: one transaction. It claims ``(s, step, compensate)`` (a duplicate returns the
  stored result), then ``(s, step, execute)`` with origin ``compensate``: if that succeeds no
  Execute ever ran, so this is a null compensation and a late Execute will be refused.
  Otherwise ``reader`` runs inside the transaction (so it may lock rows ``FOR UPDATE``) and
  the writes go with the UPDATE that stores the response.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Generic, TypeVar

import psycopg
from google.protobuf.message import Message

from invsaga.common.v1 import common_pb2
from invsaga.runtime.db import Database
from invsaga.runtime.errors import FailedPrecondition, InvalidArgument

M = TypeVar("M", bound=Message)

EXECUTE = "execute"
COMPENSATE = "compensate"


class Refused(Exception):
    """The effect's guard did not hold: nothing was written."""


@dataclass(frozen=True, slots=True)
class Effect(Generic[M]):
    """A step's response and the writes that make it true (CTEs of the barrier's statement)."""

    response: M
    writes: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    guard: str = ""  # an SQL condition over the writes; false refuses the whole statement


class Reader:
    """Reads for an effect: on one connection, taken from the pool on first use."""

    def __init__(self, db: Database, conn: psycopg.AsyncConnection | None = None) -> None:
        self._db = db
        self._conn = conn

    async def fetch(self, sql: str, params: Any = None) -> list[Any]:
        if self._conn is not None:
            cursor = await self._conn.execute(sql, params)
            return await cursor.fetchall()
        return await self._db.fetch(sql, params)


def _check_context(ctx: common_pb2.StepContext) -> None:
    if not ctx.saga_id or ctx.step == common_pb2.SAGA_STEP_UNSPECIFIED:
        raise InvalidArgument(
            "step context requires saga_id and step",
            violations=[("context.saga_id", "required"), ("context.step", "required")],
        )


_CLAIM = (
    "INSERT INTO barrier (saga_id, step, op, origin, result) VALUES (%s, %s, %s, %s, NULL)"
    " ON CONFLICT DO NOTHING RETURNING 1"
)
_STORED = "SELECT origin, result FROM barrier WHERE saga_id = %s AND step = %s AND op = %s"
_KEY = "saga_id = %(barrier_saga_id)s AND step = %(barrier_step)s AND op = 'compensate'"
_ROW = "%(barrier_saga_id)s, %(barrier_step)s, 'execute', 'execute', %(barrier_result)s"


@functools.lru_cache(maxsize=128)
def _execute_sql(writes: str, guard: str) -> str:
    """The barrier INSERT under the effect's CTEs; a guard that does not hold divides by zero,
    which aborts the statement with every write in it (a CTE's writes happen whether or not
    the INSERT selects a row)."""
    prefix = f"WITH {writes} " if writes else ""
    head = f"{prefix}INSERT INTO barrier (saga_id, step, op, origin, result)"
    if guard:
        return f"{head} SELECT {_ROW} WHERE 1 / (CASE WHEN {guard} THEN 1 ELSE 0 END) = 1"
    return f"{head} VALUES ({_ROW})"


@functools.lru_cache(maxsize=128)
def _compensate_sql(writes: str, guard: str) -> str:
    prefix = f"WITH {writes} " if writes else ""
    where = f"{_KEY} AND 1 / (CASE WHEN {guard} THEN 1 ELSE 0 END) = 1" if guard else _KEY
    return f"{prefix}UPDATE barrier SET result = %(barrier_result)s WHERE {where}"


def _params(ctx: common_pb2.StepContext, done: Effect) -> dict[str, Any]:
    """The parameters of the effect's writes and of its barrier row."""
    result = done.response.SerializeToString()
    return {**done.params, "barrier_saga_id": ctx.saga_id, "barrier_step": ctx.step, "barrier_result": result}


class Barrier:
    """The barrier of one participant's schema, answering with its step responses' types."""

    def __init__(self, db: Database, execute_response: type[Message], compensate_response: type[Message]) -> None:
        self.db = db
        self.response_types = {EXECUTE: execute_response, COMPENSATE: compensate_response}

    async def run(
        self,
        ctx: common_pb2.StepContext,
        op: str,
        effect: Callable[[Reader], Awaitable[Effect[M]]],
        on_commit: Callable[[M], None] | None = None,
    ) -> M:
        """Run ``effect`` at most once for ``(saga, step, op)``; a duplicate gets the first response.

        ``on_commit(response)`` runs only when this call's effect committed (not for a
        duplicate, nor for a null compensation).
        """
        _check_context(ctx)
        if op == EXECUTE:
            response, committed = await self._execute(ctx, effect)
        elif op == COMPENSATE:
            response, committed = await self._compensate(ctx, effect)
        else:
            raise ValueError(f"unknown barrier op {op!r}")
        if committed and on_commit is not None:
            on_commit(response)
        return response

    async def _execute(self, ctx: common_pb2.StepContext, effect: Callable[[Reader], Awaitable[Effect[M]]]):
        try:
            done = await effect(Reader(self.db))
            await self.db.pipe.execute(_execute_sql(done.writes, done.guard), _params(ctx, done))
        except Exception as error:
            # A duplicate, a refusal or a failed effect: if the step has a row, that row is the answer.
            stored = await self.db.fetchone(_STORED, (ctx.saga_id, ctx.step, EXECUTE))
            if stored is None:
                if isinstance(error, psycopg.errors.DivisionByZero):
                    raise Refused() from None
                if isinstance(error, psycopg.errors.UniqueViolation):  # the row went away: cannot happen
                    raise RuntimeError("barrier row vanished") from None
                raise
            return self._replay(ctx, EXECUTE, stored), False
        return done.response, True

    async def _compensate(self, ctx: common_pb2.StepContext, effect: Callable[[Reader], Awaitable[Effect[M]]]):
        response_type = self.response_types[COMPENSATE]
        try:
            async with self.db.transaction() as conn:
                claimed = await (await conn.execute(_CLAIM, (ctx.saga_id, ctx.step, COMPENSATE, COMPENSATE))).fetchone()
                if claimed is None:
                    stored = await (await conn.execute(_STORED, (ctx.saga_id, ctx.step, COMPENSATE))).fetchone()
                    assert stored is not None  # the claim conflicted with this row
                    return response_type.FromString(stored.result or b""), False
                never_ran = await (await conn.execute(_CLAIM, (ctx.saga_id, ctx.step, EXECUTE, COMPENSATE))).fetchone()
                if never_ran is not None:
                    done = Effect(response_type(null_compensation=True))
                else:
                    done = await effect(Reader(self.db, conn))
                await conn.execute(_compensate_sql(done.writes, done.guard), _params(ctx, done))
        except psycopg.errors.DivisionByZero:
            raise Refused() from None
        return done.response, never_ran is None

    def _replay(self, ctx: common_pb2.StepContext, op: str, stored: Any) -> Message:
        if stored.origin == COMPENSATE and op == EXECUTE:
            raise FailedPrecondition(
                f"saga {ctx.saga_id} step {common_pb2.SagaStep.Name(ctx.step)} was already compensated",
                reason="COMPENSATED_BEFORE_EXECUTE",
                metadata={"saga_id": ctx.saga_id},
            )
        return self.response_types[op].FromString(stored.result or b"")


def barrier_table(metadata: Any):
    """The barrier table of a participant's ``models.py``."""
    from sqlalchemy import Column, DateTime, Integer, LargeBinary, String, Table, func

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
