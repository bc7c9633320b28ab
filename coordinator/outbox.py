"""The notice outbox: the notices a saga owes, delivered until the notify service acknowledges.

A saga's notice that is not sent inline — the "reservation failed" notice of every saga that
ends COMPENSATED or FAILED, and the confirmation whose Notify step could not reach the notify
service — is a row of ``notice_outbox``, written in the same statement as the saga's terminal
save (``coordinator.writes.SaveWrite``): a saga at rest never lacks the notice it owes, and a
notice is never owed by a saga that did not get there.

A background task per replica (``NoticeOutbox.run``) claims the due rows for a lease (``FOR
UPDATE SKIP LOCKED``, so replicas share the work), sends each as the notify service's Execute
under the notice's own barrier key — ``(saga_id, NOTIFY)`` for the confirmation,
``(saga_id, NOTIFY_FAILURE)`` for the failure notice — and deletes the row once answered. The
barrier makes a repeated send harmless (a notice sent twice, by a replica whose claim lapsed,
or before a crash took the answer away, is stored once), so the outbox may send as often as
it must: exactly once in effect. A failed send is due again after an exponential backoff; an
answer that can never change (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE) leaves the
row ``failed`` for an operator, logged at ERROR. Rows are durable, so a coordinator restart or
a notify outage only delays notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from google.protobuf.message import DecodeError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.store import now_ms
from invsaga.common.v1 import common_pb2
from invsaga.notify.v1 import notify_pb2
from invsaga.runtime.db import finish_even_if_cancelled
from invsaga.runtime.errors import RpcFailure

if TYPE_CHECKING:
    from coordinator.participants import Participants
    from invsaga.runtime.config import Settings

log = logging.getLogger("invsaga.coordinator.outbox")

# Answers that a later send would get again: the row is given up (``failed``).
FINAL = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE})
INITIAL_BACKOFF = 0.5  # seconds after the first failed send, doubling per failure
MAX_BACKOFF = 30.0
CLAIM_BATCH = 256  # rows claimed, and sent together, per pass
POLL_INTERVAL = 5.0  # look for rows of other replicas (or due again) at least this often
WARN_EVERY = 10.0  # seconds between two warnings about notices not yet delivered

_CLAIM = text(
    "UPDATE notice_outbox o SET next_attempt_at = :until FROM ("
    " SELECT saga_id, step FROM notice_outbox WHERE state = 'pending' AND next_attempt_at <= :now"
    " ORDER BY next_attempt_at LIMIT :room FOR UPDATE SKIP LOCKED) due"
    " WHERE o.saga_id = due.saga_id AND o.step = due.step"
    " RETURNING o.saga_id, o.step, o.request, o.attempts"
)
_NEXT_DUE = text("SELECT min(next_attempt_at) FROM notice_outbox WHERE state = 'pending'")
_DELIVERED = text(
    "DELETE FROM notice_outbox o USING unnest(CAST(:saga_ids AS text[]), CAST(:steps AS integer[])) AS d(saga_id, step)"
    " WHERE o.saga_id = d.saga_id AND o.step = d.step"
)
_FAILED = text(
    "UPDATE notice_outbox o SET attempts = o.attempts + 1, last_error = d.error, state = d.state,"
    " next_attempt_at = d.due"
    " FROM unnest(CAST(:saga_ids AS text[]), CAST(:steps AS integer[]), CAST(:errors AS text[]),"
    " CAST(:states AS text[]), CAST(:dues AS bigint[])) AS d(saga_id, step, error, state, due)"
    " WHERE o.saga_id = d.saga_id AND o.step = d.step"
)
# After a send succeeds again, rows waiting out a backoff from the outage are due at once (a
# row another replica has claimed may so be sent twice: its barrier keeps that to one notice).
_RETRY_NOW = text(
    "UPDATE notice_outbox SET next_attempt_at = :now"
    " WHERE state = 'pending' AND attempts > 0 AND next_attempt_at > :now"
)
_HAND_BACK = text(
    "UPDATE notice_outbox o SET next_attempt_at = :now"
    " FROM unnest(CAST(:saga_ids AS text[]), CAST(:steps AS integer[])) AS d(saga_id, step)"
    " WHERE o.saga_id = d.saga_id AND o.step = d.step AND o.state = 'pending'"
)
_COUNTS = text("SELECT state, count(*) FROM notice_outbox GROUP BY state")


def backoff(attempts: int) -> float:
    """Seconds before the next send after ``attempts`` failed sends (0.5 s, 1 s, 2 s, ... 30 s)."""
    return min(INITIAL_BACKOFF * 2 ** max(0, attempts - 1), MAX_BACKOFF)


@dataclass(frozen=True)
class Notice:
    saga_id: str
    step: int
    request: bytes
    attempts: int  # failed sends before this one


@dataclass(frozen=True)
class Outcome:
    notice: Notice
    error: grpc.StatusCode | None  # None: acknowledged


class NoticeOutbox:
    """Delivers this replica's share of the owed notices through the notify service's Execute."""

    def __init__(self, engine: AsyncEngine, participants: "Participants", settings: "Settings") -> None:
        self.db = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.participants = participants
        self.timeout = settings.step_timeout("notify")
        # Longer than one send can take, so a live replica always answers before its claim lapses.
        self.lease_ms = int((self.timeout + 10.0) * 1000)
        self._wake = asyncio.Event()
        self._failing = False  # the last pass had sends that failed for the notify service's sake
        self._warned = 0.0
        self.delivered = 0  # notices acknowledged by this replica (for tests and metrics)

    def wake(self) -> None:
        """New notices were committed: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            delay = POLL_INTERVAL
            try:
                claimed = await finish_even_if_cancelled(self.claim(CLAIM_BATCH))
                if claimed:
                    try:
                        outcomes = await asyncio.gather(*(self.send(n) for n in claimed))
                    except asyncio.CancelledError:
                        # Shutting down mid-send: the rows are due again now, not when the claim lapses.
                        with contextlib.suppress(Exception):
                            await finish_even_if_cancelled(self.hand_back(claimed))
                        raise
                    await finish_even_if_cancelled(self.record(outcomes))
                if len(claimed) == CLAIM_BATCH:
                    delay = 0.0  # more may be due
                else:
                    due = await self.next_due()
                    if due is not None:
                        delay = min(delay, max(0.0, (due - now_ms()) / 1000.0))
            except Exception:
                log.exception("notice outbox: cannot read or record owed notices; trying again")
                delay = 1.0
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.01))

    async def claim(self, room: int) -> list[Notice]:
        now = now_ms()
        async with self.db.connect() as conn:
            rows = (await conn.execute(_CLAIM, {"now": now, "until": now + self.lease_ms, "room": room})).all()
        return [Notice(r.saga_id, r.step, bytes(r.request), r.attempts) for r in rows]

    async def next_due(self) -> int | None:
        async with self.db.connect() as conn:
            return (await conn.execute(_NEXT_DUE)).scalar()

    async def send(self, notice: Notice) -> Outcome:
        try:
            request = notify_pb2.ExecuteRequest.FromString(notice.request)
        except DecodeError:  # cannot happen to a row the coordinator wrote: never sendable
            return Outcome(notice, grpc.StatusCode.INVALID_ARGUMENT)
        try:
            await self.participants.execute["notify"](request, timeout=self.timeout)
        except grpc.RpcError as error:
            return Outcome(notice, RpcFailure.from_error(error).code)
        except Exception:  # noqa: BLE001 - a send that broke is tried again, like one refused
            log.exception("notice outbox: sending the notice of saga %s failed", notice.saga_id)
            return Outcome(notice, grpc.StatusCode.INTERNAL)
        return Outcome(notice, None)

    async def record(self, outcomes: list[Outcome]) -> None:
        done = [o.notice for o in outcomes if o.error is None]
        failed = [(o.notice, o.error) for o in outcomes if o.error is not None]
        now = now_ms()
        async with self.db.connect() as conn:
            if done:
                await conn.execute(_DELIVERED, {"saga_ids": [n.saga_id for n in done], "steps": [n.step for n in done]})
                if self._failing:
                    await conn.execute(_RETRY_NOW, {"now": now})
            if failed:
                final = [error in FINAL for _, error in failed]
                await conn.execute(
                    _FAILED,
                    {
                        "saga_ids": [n.saga_id for n, _ in failed],
                        "steps": [n.step for n, _ in failed],
                        "errors": [error.name for _, error in failed],
                        "states": ["failed" if f else "pending" for f in final],
                        "dues": [now + int(backoff(n.attempts + 1) * 1000) for n, _ in failed],
                    },
                )
        self.delivered += len(done)
        for o in done:
            if o.attempts:
                log.info(
                    "%s notice of saga %s delivered after %d failed sends",
                    _kind(o.step),
                    o.saga_id,
                    o.attempts,
                    extra={"saga_id": o.saga_id, "event": "notice_delivered"},
                )
        for notice, error in failed:
            if error in FINAL:
                log.error(
                    "%s notice of saga %s refused by the notify service (%s); it will not be sent",
                    _kind(notice.step),
                    notice.saga_id,
                    error.name,
                    extra={"saga_id": notice.saga_id, "event": "notice_refused", "code": error.name},
                )
        transient = [error for _, error in failed if error not in FINAL]
        self._failing = bool(transient) or (self._failing and not done)
        if transient and time.monotonic() - self._warned >= WARN_EVERY:
            self._warned = time.monotonic()
            codes = Counter(error.name for error in transient)
            log.warning(
                "%d notices not delivered yet (%s); they stay in the outbox and are sent again",
                len(transient),
                ", ".join(f"{code} ×{n}" for code, n in sorted(codes.items())),
                extra={"event": "notice_retry"},
            )

    async def hand_back(self, claimed: list[Notice]) -> None:
        async with self.db.connect() as conn:
            await conn.execute(
                _HAND_BACK,
                {"saga_ids": [n.saga_id for n in claimed], "steps": [n.step for n in claimed], "now": now_ms()},
            )

    async def counts(self) -> dict[str, int]:
        """Rows by state: how many notices are owed ('pending') and given up ('failed')."""
        async with self.db.connect() as conn:
            return {row[0]: row[1] for row in await conn.execute(_COUNTS)}


def _kind(step: int) -> str:
    return "failure" if step == common_pb2.SAGA_STEP_NOTIFY_FAILURE else "confirmation"
