"""Webhook delivery: a background loop, after commit, never on the Execute path.

Pending deliveries are rows with a due time (``next_attempt_at``). The loop claims due rows
for a lease (``NotifyStore.claim_due``), posts each, and records the outcome: delivered, or
due again after an exponential backoff, or failed after the last attempt. The same rows are
what a restarted process picks up, so nothing pending is lost. No database connection is
held while a POST is in flight.

What a receiver gets: ``POST`` of ``logic.webhook_body`` (UTF-8 JSON, proto field names) with
``X-Invsaga-Signature: sha256=<hex HMAC-SHA256 of the exact body, keyed with
INVSAGA_WEBHOOK_SECRET>`` (omitted when no secret is configured),
``X-Invsaga-Notification-Id`` (the idempotency key: deliveries are at least once) and
``X-Invsaga-Attempt``. No separate timestamp header is sent or signed: the signed body
carries ``created_at``, which a receiver may use to refuse replays. Any 2xx is success;
anything else, or no answer within 5 s, is retried.

A webhook URL may carry credentials: only ``logic.redact_url`` of it is logged or stored as a
delivery's error, and the full URL is used only to post.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import httpx

from invsaga.runtime.convert import aware, utcnow
from invsaga.runtime.db import finish_even_if_cancelled
from services.notify import logic
from services.notify.store import Attempt, NotifyStore

log = logging.getLogger("invsaga.notify.delivery")


class WebhookDelivery:
    def __init__(
        self,
        store: NotifyStore,
        secret: str,
        *,
        max_attempts: int = logic.WEBHOOK_MAX_ATTEMPTS,
        timeout: float = logic.WEBHOOK_TIMEOUT,
        poll_interval: float = 5.0,
        concurrency: int = 16,
    ) -> None:
        self.store = store
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
                            claimed, next_due = await finish_even_if_cancelled(self.store.claim_due(room, self.lease))
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
            await self._record(self.store.hand_back(attempt), attempt)
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to deliver is retried, never fatal to the loop
            # Stored and answered by ListNotifications: a code, never the URL or a class name.
            error = logic.delivery_error(exc)
            log.debug("webhook %s attempt %d: %s", logic.redact_url(attempt.url), number, type(exc).__name__)
        now = utcnow()
        if not error:
            outcome = self.store.record(attempt, state="delivered", error="", delivered_at=now)
        elif number >= self.max_attempts:
            outcome = self.store.record(attempt, state="failed", error=error)
        else:
            retry_at = now + timedelta(seconds=logic.backoff(number))
            outcome = self.store.record(attempt, state="pending", error=error, next_attempt_at=retry_at)
        await self._record(outcome, attempt)
        if error:
            giving_up = number >= self.max_attempts
            log.log(
                logging.WARNING if giving_up else logging.INFO,
                "webhook %s attempt %d for %s: %s%s",
                logic.redact_url(attempt.url),
                number,
                attempt.notification_id,
                error,
                " (giving up)" if giving_up else "",
                extra={"event": "webhook_failed", "attempt": number},
            )

    async def _record(self, update: Coroutine[Any, Any, None], attempt: Attempt) -> None:
        """Write ``update`` to the claimed row, to its end even when shutdown cancels the caller."""

        async def logged() -> None:
            try:
                await update
            except Exception:
                # The claim lapses and the attempt is made again: at least once, never lost.
                log.exception(
                    "cannot record webhook delivery of %s to %s", attempt.notification_id, logic.redact_url(attempt.url)
                )

        await finish_even_if_cancelled(logged())
