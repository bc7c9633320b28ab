"""Reading and writing notifications with their deliveries (SQLAlchemy Core; the Execute
step writes the same rows in one plain SQL statement on PostgreSQL, ``notification_ctes``).

The log channel has no row of its own: its line is written right after the notification
commits (``server.Outbox.committed``), so its delivery is always delivered, at the first
attempt, when the notification was created, and is shown from the notification's row. Only
webhook deliveries, which have a state to keep, are rows of ``deliveries``; that spares a
statement per notification when no webhook is configured. (Earlier versions stored a "log"
row holding exactly those values; reading skips it.)
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from psycopg.types.json import Json
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from invsaga.notify.v1 import notify_pb2 as pb
from invsaga.runtime.convert import to_timestamp
from services.notify import logic, models

N = models.notifications
D = models.deliveries


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
        channel=row.channel,
        state=logic.STATE_TO_PROTO[row.state],
        attempts=row.attempts,
        last_error=row.last_error,
        delivered_at=to_timestamp(row.delivered_at),
    )


def _notification_proto(row, webhook_deliveries: Sequence[pb.Delivery]) -> pb.Notification:
    created_at = to_timestamp(row.created_at)
    return pb.Notification(
        notification_id=row.notification_id,
        saga_id=row.saga_id,
        kind=logic.KIND_FROM_DB[row.kind],
        order_id=row.order_id,
        customer_id=row.customer_id,
        message=row.message,
        attributes=dict(row.attributes or {}),
        deliveries=[_log_delivery(created_at), *webhook_deliveries],
        created_at=created_at,
    )


# The same rows as insert_notification, as data-modifying CTEs for the Execute step's one
# statement on PostgreSQL (execute_once_pg_statement): the response is built from the values
# written, so nothing is read back.
_NOTIFICATION_CTE_PG = (
    "notification AS (INSERT INTO notifications"
    " (notification_id, saga_id, kind, order_id, customer_id, message, attributes, created_at)"
    " VALUES (%(notification_id)s, %(saga_id)s, %(kind)s, %(order_id)s, %(customer_id)s, %(message)s,"
    " %(attributes)s, %(created_at)s))"
)
_DELIVERIES_CTE_PG = (
    ", deliveries AS (INSERT INTO deliveries"
    " (notification_id, channel, state, attempts, last_error, delivered_at, next_attempt_at)"
    " SELECT %(notification_id)s, channel, 'pending', 0, '', NULL, %(created_at)s"
    " FROM unnest(%(channels)s::text[]) AS channel)"
)


def _new_notification(
    saga_id: str, source: pb.NotifyInput | pb.SendNotificationRequest, channels: Sequence[str], now: datetime
) -> pb.Notification:
    """What ``source`` says, under a new id, with a pending delivery per channel: the
    notification as ``load_notifications`` reads it back once written. No column it shows is
    filled in by the database."""
    created_at = to_timestamp(now)
    return pb.Notification(
        notification_id=str(uuid.uuid4()),
        saga_id=saga_id,
        kind=source.kind,
        order_id=source.order_id,
        customer_id=source.customer_id,
        message=source.message,
        attributes=source.attributes,
        deliveries=[
            _log_delivery(created_at),
            *(pb.Delivery(channel=url, state=pb.DELIVERY_STATE_PENDING) for url in channels),
        ],
        created_at=created_at,
    )


def _notification_row(
    notification: pb.Notification, source: pb.NotifyInput | pb.SendNotificationRequest, now: datetime
) -> dict:
    return {
        "notification_id": notification.notification_id,
        "saga_id": notification.saga_id,
        "kind": logic.KIND_TO_DB[source.kind],
        "order_id": source.order_id,
        "customer_id": source.customer_id,
        "message": source.message,
        "attributes": dict(source.attributes),
        "created_at": now,
    }


async def insert_notification(
    conn: AsyncConnection,
    saga_id: str,
    source: pb.NotifyInput | pb.SendNotificationRequest,
    *,
    webhooks: Sequence[str],
    now: datetime,
) -> pb.Notification:
    """Store what ``source`` says with a pending delivery, due now, per webhook: one
    statement, and a second one when webhooks are configured; the notification written."""
    channels = list(dict.fromkeys(webhooks))
    notification = _new_notification(saga_id, source, channels, now)
    await conn.execute(N.insert(), _notification_row(notification, source, now))
    if channels:
        await conn.execute(
            D.insert(),
            [
                {
                    "notification_id": notification.notification_id,
                    "channel": url,
                    "state": "pending",
                    "attempts": 0,
                    "last_error": "",
                    "delivered_at": None,
                    "next_attempt_at": now,
                }
                for url in channels
            ],
        )
    return notification


def notification_ctes(
    saga_id: str,
    source: pb.NotifyInput | pb.SendNotificationRequest,
    *,
    webhooks: Sequence[str],
    now: datetime,
) -> tuple[pb.Notification, str, dict]:
    """``insert_notification`` as CTEs and their parameters, with the notification they write."""
    channels = list(dict.fromkeys(webhooks))
    notification = _new_notification(saga_id, source, channels, now)
    params = _notification_row(notification, source, now)
    params["attributes"] = Json(params["attributes"])
    if not channels:
        return notification, _NOTIFICATION_CTE_PG, params
    params["channels"] = channels
    return notification, _NOTIFICATION_CTE_PG + _DELIVERIES_CTE_PG, params


async def load_notifications(
    conn: AsyncConnection,
    where=None,
    *,
    webhooks: Sequence[str] = (),
    offset: int = 0,
    limit: int | None = None,
) -> list[pb.Notification]:
    """Notifications newest first, each with its deliveries."""
    query = select(N).order_by(N.c.seq.desc()).offset(offset)
    if where is not None:
        query = query.where(where)
    if limit is not None:
        query = query.limit(limit)
    rows = (await conn.execute(query)).all()
    if not rows:
        return []
    by_id: dict[str, list] = defaultdict(list)
    ids = [r.notification_id for r in rows]
    for d in await conn.execute(
        select(D).where(D.c.notification_id.in_(ids), D.c.channel != logic.LOG_CHANNEL)
    ):
        by_id[d.notification_id].append(d)
    result = []
    for row in rows:
        found = sorted(by_id[row.notification_id], key=lambda d: _channel_order(d.channel, list(webhooks)))
        result.append(_notification_proto(row, [_delivery_proto(d) for d in found]))
    return result
