"""All of the notify service's SQL: notifications with their webhook deliveries, the Execute
step's effect, and the claims and outcomes of the delivery loop (``delivery.py``).

The log channel has no row of its own: its line is written right after the notification
commits (``server.Outbox.committed``), so its delivery is always delivered, at the first
attempt, when the notification was created, and is shown from the notification's row. Only
webhook deliveries, which have a state to keep, are rows of ``deliveries``; that spares a
statement per notification when no webhook is configured. (Earlier versions stored a "log"
row holding exactly those values; reading skips it.)
"""

from __future__ import annotations

import builtins
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from psycopg.types.json import Json

from invsaga.common.v1 import common_pb2
from invsaga.notify.v1 import notify_pb2 as pb
from invsaga.runtime.barrier import COMPENSATE, EXECUTE, Barrier, Effect, Reader
from invsaga.runtime.convert import to_timestamp, utcnow
from invsaga.runtime.db import Database
from services.common import fields, matching
from services.notify import logic

# A notification and its pending delivery per webhook, as data-modifying CTEs: the Execute
# step's barrier statement, or SendNotification's own. The response is built from the values
# written, so nothing is read back.
_NOTIFICATION_CTE = (
    "notification AS (INSERT INTO notifications"
    " (notification_id, saga_id, kind, order_id, customer_id, message, attributes, created_at)"
    " VALUES (%(notification_id)s, %(saga_id)s, %(kind)s, %(order_id)s, %(customer_id)s, %(message)s,"
    " %(attributes)s, %(created_at)s))"
)
_DELIVERIES_CTE = (
    ", deliveries AS (INSERT INTO deliveries"
    " (notification_id, channel, state, attempts, last_error, delivered_at, next_attempt_at)"
    " SELECT %(notification_id)s, channel, 'pending', 0, '', NULL, %(created_at)s"
    " FROM unnest(%(channels)s::text[]) AS channel)"
)

_NOTIFICATIONS = "SELECT * FROM notifications"
_NEWEST_FIRST = " ORDER BY seq DESC OFFSET %(offset)s LIMIT %(limit)s"
_BY_IDS = f"{_NOTIFICATIONS} WHERE notification_id = ANY(%(ids)s)"
_DELIVERIES = "SELECT * FROM deliveries WHERE notification_id = ANY(%(ids)s) AND channel <> 'log'"

# Claims the due deliveries by pushing their due time forward by a lease: two replicas never
# post the same attempt, and a process that dies mid-attempt leaves the row to be retried once
# the lease runs out. Rows another replica is claiming right now are skipped, not waited for.
_CLAIM = (
    "UPDATE deliveries d SET next_attempt_at = %(until)s FROM ("
    " SELECT notification_id, channel FROM deliveries WHERE state = 'pending' AND next_attempt_at <= %(now)s"
    " ORDER BY next_attempt_at LIMIT %(room)s FOR UPDATE SKIP LOCKED) due"
    " WHERE d.notification_id = due.notification_id AND d.channel = due.channel"
    " RETURNING d.notification_id, d.channel, d.attempts"
)
_NEXT_DUE = "SELECT min(next_attempt_at) AS due FROM deliveries WHERE state = 'pending'"
# The claimed row is still pending with the attempts seen: nobody else moved it on.
_UNCHANGED = (
    " WHERE notification_id = %(notification_id)s AND channel = %(url)s"
    " AND state = 'pending' AND attempts = %(attempts_before)s"
)
_RECORD = (
    "UPDATE deliveries SET state = %(state)s, attempts = %(attempts)s, last_error = %(last_error)s,"
    " delivered_at = %(delivered_at)s, next_attempt_at = %(next_attempt_at)s" + _UNCHANGED
)
_HAND_BACK = "UPDATE deliveries SET next_attempt_at = %(next_attempt_at)s" + _UNCHANGED


def _channel_order(channel: str, webhooks: Sequence[str]) -> tuple[int, int, str]:
    # The webhooks as configured, then any no longer configured.
    if channel in webhooks:
        return (0, webhooks.index(channel), channel)
    return (1, 0, channel)


def _log_delivery(created_at: Timestamp) -> pb.Delivery:
    return pb.Delivery(
        channel=logic.LOG_CHANNEL, state=pb.DELIVERY_STATE_DELIVERED, attempts=1, delivered_at=created_at
    )


def _delivery_proto(row) -> pb.Delivery:
    return pb.Delivery(
        channel=logic.redact_url(row.channel),  # the row keeps the full URL, to post to; no answer shows it
        state=logic.STATE_TO_PROTO[row.state],
        **fields(row, "attempts last_error"),
        delivered_at=to_timestamp(row.delivered_at),
    )


def _notification_proto(row, webhook_deliveries: Sequence[pb.Delivery]) -> pb.Notification:
    created_at = to_timestamp(row.created_at)
    return pb.Notification(
        **fields(row, "notification_id saga_id order_id customer_id message"),
        kind=logic.KIND_FROM_DB[row.kind],
        attributes=dict(row.attributes or {}),
        deliveries=[_log_delivery(created_at), *webhook_deliveries],
        created_at=created_at,
    )


def notification_ctes(
    saga_id: str, source: pb.NotifyInput | pb.SendNotificationRequest, *, webhooks: Sequence[str], now: datetime
) -> tuple[pb.Notification, str, dict]:
    """What ``source`` says, under a new id, with a pending delivery, due now, per webhook: the
    notification as it reads back once written (no column it shows is filled in by the
    database), and the CTEs that write it with their parameters."""
    channels = list(dict.fromkeys(webhooks))
    created_at = to_timestamp(now)
    notification = pb.Notification(
        notification_id=str(uuid.uuid4()),
        **fields(source, "kind order_id customer_id message attributes"),
        saga_id=saga_id,
        deliveries=[
            _log_delivery(created_at),
            *(pb.Delivery(channel=logic.redact_url(url), state=pb.DELIVERY_STATE_PENDING) for url in channels),
        ],
        created_at=created_at,
    )
    params = {
        "notification_id": notification.notification_id,
        "saga_id": saga_id,
        "kind": logic.KIND_TO_DB[source.kind],
        **fields(source, "order_id customer_id message"),
        "attributes": Json(dict(source.attributes)),
        "created_at": now,
    }
    if not channels:
        return notification, _NOTIFICATION_CTE, params
    params["channels"] = channels
    return notification, _NOTIFICATION_CTE + _DELIVERIES_CTE, params


@dataclass(frozen=True)
class Attempt:
    """A claimed delivery: what to post where, and the attempts made before."""

    notification_id: str
    url: str
    attempts_before: int
    body: bytes


class NotifyStore:
    def __init__(self, db: Database, webhooks: Sequence[str]) -> None:
        self.db = db
        self.webhooks = tuple(webhooks)
        self.barrier = Barrier(db, pb.ExecuteResponse, pb.CompensateResponse)

    async def execute(
        self, ctx: common_pb2.StepContext, source: pb.NotifyInput, on_commit: Callable[[pb.ExecuteResponse], None]
    ) -> pb.ExecuteResponse:
        """The Notify step: the notification and its barrier row in one statement."""

        async def effect(reader: Reader) -> Effect[pb.ExecuteResponse]:
            notification, ctes, params = notification_ctes(ctx.saga_id, source, webhooks=self.webhooks, now=utcnow())
            return Effect(pb.ExecuteResponse(notify=pb.NotifyOutput(notification=notification)), ctes, params)

        return await self.barrier.run(ctx, EXECUTE, effect, on_commit=on_commit)

    async def compensate(self, ctx: common_pb2.StepContext) -> pb.CompensateResponse:
        async def effect(reader: Reader) -> Effect[pb.CompensateResponse]:
            return Effect(pb.CompensateResponse())  # a sent notification cannot be unsent

        return await self.barrier.run(ctx, COMPENSATE, effect)

    async def send(self, saga_id: str, source: pb.SendNotificationRequest) -> pb.Notification:
        """Store a notification outside any saga step; the notification written."""
        notification, ctes, params = notification_ctes(saga_id, source, webhooks=self.webhooks, now=utcnow())
        await self.db.execute(f"WITH {ctes} SELECT 1", params)
        return notification

    async def list(
        self, *, saga_id: str = "", kind: str = "", offset: int = 0, limit: int | None = None
    ) -> list[pb.Notification]:
        """Notifications newest first, each with its deliveries, of the saga and kind given (if given)."""
        params = {"saga_id": saga_id, "kind": kind, "offset": offset, "limit": limit}
        rows = await self.db.fetch(
            f"{_NOTIFICATIONS} WHERE {matching(saga_id=saga_id, kind=kind)}{_NEWEST_FIRST}", params
        )
        return await self._with_deliveries(rows)

    # ``builtins.list`` below: in this class, ``list`` is the method above.
    async def _with_deliveries(self, rows: Sequence) -> builtins.list[pb.Notification]:
        if not rows:
            return []
        by_id: dict[str, list] = defaultdict(list)
        for d in await self.db.fetch(_DELIVERIES, {"ids": [r.notification_id for r in rows]}):
            by_id[d.notification_id].append(d)
        result = []
        for row in rows:
            found = sorted(by_id[row.notification_id], key=lambda d: _channel_order(d.channel, self.webhooks))
            result.append(_notification_proto(row, [_delivery_proto(d) for d in found]))
        return result

    async def claim_due(self, room: int, lease: timedelta) -> tuple[builtins.list[Attempt], datetime | None]:
        """Up to ``room`` due deliveries, claimed for ``lease``; and when the next pending one is due."""
        now = utcnow()
        mine = await self.db.fetch(_CLAIM, {"now": now, "until": now + lease, "room": room})
        claimed = []
        if mine:
            found = await self.db.fetch(_BY_IDS, {"ids": list({r.notification_id for r in mine})})
            # The body leaves out the deliveries: they need not be read.
            bodies = {r.notification_id: logic.webhook_body(_notification_proto(r, ())) for r in found}
            claimed = [Attempt(r.notification_id, r.channel, r.attempts, bodies[r.notification_id]) for r in mine]
        return claimed, (await self.db.fetchone(_NEXT_DUE)).due

    async def record(
        self,
        attempt: Attempt,
        *,
        state: str,
        error: str,
        delivered_at: datetime | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """The outcome of a claimed attempt, unless someone else has moved the row on since the claim."""
        outcome = {"state": state, "attempts": attempt.attempts_before + 1, "last_error": error}
        outcome.update(delivered_at=delivered_at, next_attempt_at=next_attempt_at)
        await self.db.execute(_RECORD, {**fields(attempt, "notification_id url attempts_before"), **outcome})

    async def hand_back(self, attempt: Attempt) -> None:
        """Make a claimed delivery due now, without counting an attempt."""
        await self.db.execute(
            _HAND_BACK, {**fields(attempt, "notification_id url attempts_before"), "next_attempt_at": utcnow()}
        )
