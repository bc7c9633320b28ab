"""The coordinator's two hot writes, a new saga and a saga's save, each in two forms.

The group committer sends a batch of either kind as ONE statement (``send``): the rows as
typed VALUES, a data-modifying CTE, the events inserted only where the write happened, and
``pg_notify`` for other replicas' watchers. Called on a connection (``__call__``), a write
runs on its own in the committer's ordinary transaction, the fallback when a bulk statement
fails.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import psycopg
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator import models
from invsaga.coordinator.v1 import coordinator_pb2 as pb

S = models.sagas
E = models.saga_events
OUTBOX = models.notice_outbox
NOTIFY_CHANNEL = "invsaga_saga_events"

# Wakes other replicas' watchers; evaluated once per statement, and only if a row was written.
# The payloads come as one text, a line each (saga ids and the origin are hex): a scalar
# parameter, like the rows' values, which psycopg dumps far faster than an array.
_NOTIFY = "(SELECT count(pg_notify('" + NOTIFY_CHANNEL + "', p)) FROM unnest(string_to_array(%s::text, E'\\n')) AS p)"

# reservation_state/_expires_at are NULL but in the save that completes a saga (which opens
# its reservation, coordinator.lifecycle): NULL keeps what the row has.
# Each table: (column, its SQL type) in the order of the VALUES rows.
_SAVE_COLUMNS = (
    ("saga_id", "text"),
    ("owner", "text"),
    ("status", "integer"),
    ("state", "bytea"),
    ("updated_at", "bigint"),
    ("last_seq", "bigint"),
    ("reservation_state", "integer"),
    ("reservation_expires_at", "bigint"),
)
_CREATE_COLUMNS = (
    ("saga_id", "text"),
    ("request_id", "text"),
    ("request_hash", "text"),
    ("status", "integer"),
    ("priority", "integer"),
    ("is_urgent", "boolean"),
    ("state", "bytea"),
    ("last_seq", "bigint"),
    ("owner", "text"),
    ("lease_until", "bigint"),
    ("deadline", "bigint"),
    ("trace_context", "text"),
    ("created_at", "bigint"),
    ("tenant", "text"),
    ("order_id", "text"),
    ("customer_id", "text"),
    ("kind", "integer"),
)
_EVENT_COLUMNS = (("saga_id", "text"), ("seq", "bigint"), ("event", "bytea"))
_NOTICE_COLUMNS = (("saga_id", "text"), ("step", "integer"), ("request", "bytea"), ("created_at", "bigint"))


def _padded(count: int) -> int:
    """Rows are padded with NULL rows to a power of two, so that few statement texts exist."""
    return 1 << max(0, count - 1).bit_length()


# Statement texts by shape. A text runs to hundreds of kilobytes for a batch of large sagas, so
# the caches keep the few shapes a steady load uses, not every shape a burst ever made.
STATEMENT_SHAPES = 32


@functools.lru_cache(maxsize=STATEMENT_SHAPES)
def _values(name: str, columns: tuple[tuple[str, str], ...], rows: int) -> str:
    """``name(columns) AS (VALUES ...)`` with ``rows`` rows of typed placeholders.

    Scalar parameters rather than arrays: psycopg dumps arrays element by element in Python,
    about five times slower than it dumps the same values as separate parameters.
    """
    row = "(" + ", ".join(f"%s::{t}" for _, t in columns) + ")"
    return f"{name}({', '.join(c for c, _ in columns)}) AS (VALUES {', '.join([row] * rows)})"


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


# The notices a terminal save owes (``coordinator.outbox``), inserted only where the save happened.
def _notices_cte(notices: int) -> str:
    if not notices:
        return ""
    return f""",
    {_values("y", _NOTICE_COLUMNS, notices)},
    o AS (
        INSERT INTO notice_outbox (saga_id, step, request, state, attempts, last_error, next_attempt_at, created_at)
        SELECT y.saga_id, y.step, y.request, 'pending', 0, '', y.created_at, y.created_at
          FROM y WHERE y.saga_id IN (SELECT saga_id FROM u)
        ON CONFLICT DO NOTHING
    )"""


@functools.lru_cache(maxsize=STATEMENT_SHAPES)
def _bulk_save_sql(saves: int, events: int, notices: int = 0) -> str:
    return _numbered(f"""
    WITH {_values("v", _SAVE_COLUMNS, saves)},
    u AS (
        UPDATE sagas AS s
           SET status = v.status, state = v.state, updated_at = v.updated_at, claimed_from = 0,
               last_seq = GREATEST(s.last_seq, v.last_seq),
               reservation_state = COALESCE(v.reservation_state, s.reservation_state),
               reservation_expires_at = CASE WHEN v.reservation_state IS NULL
                                             THEN s.reservation_expires_at ELSE v.reservation_expires_at END
          FROM v
         WHERE s.saga_id = v.saga_id AND s.owner = v.owner
        RETURNING s.saga_id, s.cancel_requested
    ),
    {_values("x", _EVENT_COLUMNS, events)},
    e AS (
        INSERT INTO saga_events (saga_id, seq, event)
        SELECT x.saga_id, x.seq, x.event FROM x WHERE x.saga_id IN (SELECT saga_id FROM u)
    ){_notices_cte(notices)}
    SELECT u.saga_id, u.cancel_requested, {_NOTIFY} FROM u
    """)


@functools.lru_cache(maxsize=STATEMENT_SHAPES)
def _bulk_create_sql(creates: int, events: int) -> str:
    return _numbered(f"""
    WITH {_values("v", _CREATE_COLUMNS, creates)},
    i AS (
        INSERT INTO sagas (saga_id, request_id, request_hash, status, priority, is_urgent, state, last_seq,
                           cancel_requested, owner, lease_until, deadline, trace_context, created_at, updated_at,
                           tenant, order_id, customer_id, kind)
        SELECT v.saga_id, v.request_id, v.request_hash, v.status, v.priority, v.is_urgent, v.state, v.last_seq,
               false, v.owner, v.lease_until, v.deadline, v.trace_context, v.created_at, v.created_at, v.tenant,
               v.order_id, v.customer_id, v.kind
          FROM v
         WHERE v.saga_id IS NOT NULL
        ON CONFLICT DO NOTHING
        RETURNING saga_id
    ),
    {_values("x", _EVENT_COLUMNS, events)},
    e AS (
        INSERT INTO saga_events (saga_id, seq, event)
        SELECT x.saga_id, x.seq, x.event FROM x WHERE x.saga_id IN (SELECT saga_id FROM i)
    )
    SELECT i.saga_id, {_NOTIFY} FROM i
    """)


def event_values(saga_id: str, events: Sequence[pb.SagaEvent]) -> list[dict[str, Any]]:
    """The ``saga_events`` rows of a saga's events."""
    return [{"saga_id": saga_id, "seq": e.seq, "event": e.SerializeToString()} for e in events]


def pending_notice(saga_id: str, step: int, request: bytes, now: int) -> dict[str, Any]:
    """A new ``notice_outbox`` row: pending, due at once."""
    return dict(
        saga_id=saga_id,
        step=step,
        request=request,
        state="pending",
        attempts=0,
        last_error="",
        next_attempt_at=now,
        created_at=now,
    )


def _event_rows(writes: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [(e["saga_id"], e["seq"], e["event"]) for w in writes for e in w.events]


class CreateWrite:
    """A new saga's row and first events; nothing if its request_id is taken."""

    def __init__(self, values: dict[str, Any], events: Sequence[pb.SagaEvent]) -> None:
        self.saga_id = values["saga_id"]
        self.values = values
        self.events = event_values(self.saga_id, events)

    async def __call__(self, conn: AsyncConnection):
        """None if created, else the row that holds the request_id."""
        inserted = await conn.execute(insert(S).values(**self.values).on_conflict_do_nothing().returning(S.c.saga_id))
        if inserted.first() is None:
            return await self.existing(conn)
        if self.events:
            await conn.execute(E.insert(), self.events)
        return None

    async def existing(self, conn: AsyncConnection):
        return (await conn.execute(select(S).where(S.c.request_id == self.values["request_id"]))).one()

    @staticmethod
    async def send(raw: Any, writes: list["CreateWrite"], notes: str) -> Any:
        """Execute the statement (queued only, in a pipeline); its rows go to ``results``."""
        n, params = _params([tuple(w.values[c] for c, _ in _CREATE_COLUMNS) for w in writes], len(_CREATE_COLUMNS))
        m, event_params = _params(_event_rows(writes), len(_EVENT_COLUMNS))
        return await psycopg.AsyncRawCursor(raw).execute(_bulk_create_sql(n, m), [*params, *event_params, notes])

    @staticmethod
    def results(writes: list["CreateWrite"], rows: list[Any]) -> set[str]:
        """The ids of the sagas inserted."""
        return {row[0] for row in rows}


@dataclass
class SaveResult:
    ok: bool  # False: this replica no longer owns the saga
    cancel_requested: bool = False


class SaveWrite:
    """One saga's save: its new row values and events, guarded by its owner.

    ``notices``: (step, serialized notify ExecuteRequest) pairs the saga now owes, written to
    the outbox with the save (a terminal one), and only if the save happened.
    """

    def __init__(
        self,
        saga_id: str,
        owner: str,
        values: dict[str, Any],
        events: Sequence[pb.SagaEvent],
        notices: Sequence[tuple[int, bytes]] = (),
    ) -> None:
        self.saga_id = saga_id
        self.owner = owner
        self.values = values
        self.events = event_values(saga_id, events)
        now = values.get("updated_at", 0)
        self.notices = [pending_notice(saga_id, step, request, now) for step, request in notices]

    async def __call__(self, conn: AsyncConnection) -> SaveResult:
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
        for notice in self.notices:
            await conn.execute(insert(OUTBOX).values(**notice).on_conflict_do_nothing())
        return SaveResult(ok=True, cancel_requested=bool(row.cancel_requested))

    @staticmethod
    async def send(raw: Any, writes: list["SaveWrite"], notes: str) -> Any:
        """Execute the statement (queued only, in a pipeline); its rows go to ``results``."""
        rows = [
            tuple({"saga_id": w.saga_id, "owner": w.owner, "last_seq": 0, **w.values}.get(c) for c, _ in _SAVE_COLUMNS)
            for w in writes
        ]
        n, params = _params(rows, len(_SAVE_COLUMNS))
        m, event_params = _params(_event_rows(writes), len(_EVENT_COLUMNS))
        notices = [tuple(o[c] for c, _ in _NOTICE_COLUMNS) for w in writes for o in w.notices]
        k, notice_params = _params(notices, len(_NOTICE_COLUMNS)) if notices else (0, [])
        return await psycopg.AsyncRawCursor(raw).execute(
            _bulk_save_sql(n, m, k), [*params, *event_params, *notice_params, notes]
        )

    @staticmethod
    def results(writes: list["SaveWrite"], rows: list[Any]) -> list[SaveResult]:
        """Each save's result; events were written only where the owner guard held."""
        saved = {row[0]: bool(row[1]) for row in rows}
        return [
            SaveResult(ok=True, cancel_requested=saved[w.saga_id]) if w.saga_id in saved else SaveResult(ok=False)
            for w in writes
        ]


BULK = (CreateWrite, SaveWrite)
