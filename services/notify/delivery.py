"""Webhook delivery: a background loop, after commit, never on the Execute path.

Pending deliveries are rows with a due time (``next_attempt_at``). The loop claims due rows
by pushing their due time forward by a lease in one conditional UPDATE per row (so two
replicas on PostgreSQL never post the same attempt, and a process that dies mid-attempt
leaves the row to be retried once the lease runs out), posts each, and records the outcome:
delivered, or due again after an exponential backoff, or failed after the last attempt.
The same rows are what a restarted process picks up, so nothing pending is lost.

No database connection is held while a POST is in flight (SQLite has one per process).

What a receiver gets: ``POST`` of ``logic.webhook_body`` (UTF-8 JSON, proto field names) with
``X-Invsaga-Signature: sha256=<hex HMAC-SHA256 of the exact body, keyed with
INVSAGA_WEBHOOK_SECRET>`` (omitted when no secret is configured),
``X-Invsaga-Notification-Id`` (the idempotency key: deliveries are at least once) and
``X-Invsaga-Attempt``. No separate timestamp header is sent or signed: the signed body
carries ``created_at``, which a receiver may use to refuse replays. Any 2xx is success;
anything else, or no answer within 5 s, is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from invsaga.runtime.convert import aware, utcnow
from services.notify import logic, models, store

log = logging.getLogger("invsaga.notify.delivery")

T = TypeVar("T")

D = models.deliveries
N = models.notifications


@dataclass(frozen=True)
class Attempt:
    notification_id: str
    url: str
    attempts_before: int
    body: bytes


class WebhookDelivery:
    def __init__(
        self,
        engine: AsyncEngine,
        secret: str,
        *,
        max_attempts: int = logic.WEBHOOK_MAX_ATTEMPTS,
        timeout: float = logic.WEBHOOK_TIMEOUT,
        poll_interval: float = 5.0,
        concurrency: int = 16,
    ) -> None:
        self.engine = engine
        self.secret = secret
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        # Longer than one POST can take, so a live worker always finishes before its claim lapses.
        self.lease = timedelta(seconds=timeout + 10.0)
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task] = set()

    def wake(self) -> None:
        """New pending deliveries were committed: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            try:
                while True:
                    self._wake.clear()
                    delay = self.poll_interval
                    room = self.concurrency - len(self._in_flight)
                    # With every slot busy, rows may be due already: rather than polling for
                    # them, wait for a delivery to finish (``_finished`` wakes the loop).
                    if room > 0:
                        try:
                            claimed, next_due = await _finish_even_if_cancelled(self._claim(room))
                            for attempt in claimed:
                                task = asyncio.create_task(self._deliver(client, attempt))
                                self._in_flight.add(task)
                                task.add_done_callback(self._finished)
                            if next_due is not None:
                                delay = min(delay, max(0.0, (aware(next_due) - utcnow()).total_seconds()))
                        except Exception:
                            log.exception("webhook delivery loop: cannot read pending deliveries")
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.01))
            finally:
                for task in list(self._in_flight):
                    task.cancel()
                for task in list(self._in_flight):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    def _finished(self, task: asyncio.Task) -> None:
        # A slot is free, and the row may be due again (a retry): look now.
        self._in_flight.discard(task)
        self._wake.set()

    async def _claim(self, room: int) -> tuple[list[Attempt], object]:
        now = utcnow()
        claimed: list[Attempt] = []
        async with self.engine.begin() as conn:
            due = (
                await conn.execute(
                    select(D.c.notification_id, D.c.channel, D.c.attempts, D.c.next_attempt_at)
                    .where(D.c.state == "pending", D.c.next_attempt_at <= now)
                    .order_by(D.c.next_attempt_at)
                    .limit(room)
                )
            ).all()
            mine = []
            for row in due:
                taken = await conn.execute(
                    update(D)
                    .where(
                        *_unchanged(row.notification_id, row.channel, row.attempts),
                        D.c.next_attempt_at == row.next_attempt_at,
                    )
                    .values(next_attempt_at=now + self.lease)
                )
                if taken.rowcount == 1:
                    mine.append(row)
            if mine:
                ids = {r.notification_id for r in mine}
                found = await store.load_notifications(conn, N.c.notification_id.in_(ids))
                bodies = {n.notification_id: logic.webhook_body(n) for n in found}
                claimed = [Attempt(r.notification_id, r.channel, r.attempts, bodies[r.notification_id]) for r in mine]
            next_due = (
                await conn.execute(select(func.min(D.c.next_attempt_at)).where(D.c.state == "pending"))
            ).scalar()
        return claimed, next_due

    async def _deliver(self, client: httpx.AsyncClient, attempt: Attempt) -> None:
        number = attempt.attempts_before + 1
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "invsaga-notify",
            logic.NOTIFICATION_ID_HEADER: attempt.notification_id,
            logic.ATTEMPT_HEADER: str(number),
        }
        if self.secret:
            headers[logic.SIGNATURE_HEADER] = logic.sign(self.secret, attempt.body)
        error = ""
        try:
            reply = await client.post(attempt.url, content=attempt.body, headers=headers)
            if not reply.is_success:
                error = f"HTTP {reply.status_code}"
        except asyncio.CancelledError:
            # Shutting down mid-attempt: hand the row back now rather than when the lease lapses.
            await self._record(attempt, {"next_attempt_at": utcnow()})
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to deliver is retried, never fatal to the loop
            error = f"{type(exc).__name__}: {exc}"[:1024]
        now = utcnow()
        values: dict[str, object] = {"attempts": number, "last_error": error, "next_attempt_at": None}
        if not error:
            values.update(state="delivered", delivered_at=now)
        elif number >= self.max_attempts:
            values.update(state="failed")
        else:
            values.update(next_attempt_at=now + timedelta(seconds=logic.backoff(number)))
        await self._record(attempt, values)
        if error:
            level = logging.WARNING if values.get("state") == "failed" else logging.INFO
            log.log(
                level,
                "webhook %s attempt %d for %s: %s%s",
                attempt.url,
                number,
                attempt.notification_id,
                error,
                " (giving up)" if values.get("state") == "failed" else "",
                extra={"event": "webhook_failed", "attempt": number},
            )

    async def _record(self, attempt: Attempt, values: dict) -> None:
        """Update the claimed row, unless someone else has moved it on since the claim."""
        await _finish_even_if_cancelled(self._update(attempt, values))

    async def _update(self, attempt: Attempt, values: dict) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(D)
                    .where(*_unchanged(attempt.notification_id, attempt.url, attempt.attempts_before))
                    .values(**values)
                )
        except Exception:
            # The claim lapses and the attempt is made again: at least once, never lost.
            log.exception("cannot record webhook delivery of %s to %s", attempt.notification_id, attempt.url)


def _unchanged(notification_id: str, channel: str, attempts: int) -> tuple:
    """The row is still pending with the attempts seen: nobody else moved it on."""
    return (
        D.c.notification_id == notification_id,
        D.c.channel == channel,
        D.c.state == "pending",
        D.c.attempts == attempts,
    )


async def _finish_even_if_cancelled(work: Coroutine[Any, Any, T]) -> T:
    """Run a short database transaction to its end even when shutdown cancels the caller.

    A transaction cancelled half-way leaves the psycopg connection in a state in which
    returning it to the pool hangs, and the process would miss its shutdown deadline.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise
