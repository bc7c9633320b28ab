"""Reading and writing notifications with their deliveries (SQLAlchemy Core)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from invsaga.notify.v1 import notify_pb2 as pb
from invsaga.runtime.convert import to_timestamp
from services.notify import logic, models

N = models.notifications
D = models.deliveries


def _channel_order(channel: str, webhooks: Sequence[str]) -> tuple[int, int, str]:
    # The log first, then the webhooks as configured, then any no longer configured.
    if channel == logic.LOG_CHANNEL:
        return (0, 0, channel)
    if channel in webhooks:
        return (1, webhooks.index(channel), channel)
    return (2, 0, channel)


def _delivery_proto(row) -> pb.Delivery:
    return pb.Delivery(
        channel=row.channel,
        state=logic.STATE_TO_PROTO[row.state],
        attempts=row.attempts,
        last_error=row.last_error,
        delivered_at=to_timestamp(row.delivered_at),
    )


def _notification_proto(row, deliveries: Sequence[pb.Delivery]) -> pb.Notification:
    return pb.Notification(
        notification_id=row.notification_id,
        saga_id=row.saga_id,
        kind=logic.KIND_FROM_DB[row.kind],
        order_id=row.order_id,
        customer_id=row.customer_id,
        message=row.message,
        attributes=dict(row.attributes or {}),
        deliveries=deliveries,
        created_at=to_timestamp(row.created_at),
    )


async def insert_notification(
    conn: AsyncConnection,
    saga_id: str,
    source: pb.NotifyInput | pb.SendNotificationRequest,
    *,
    webhooks: Sequence[str],
    now: datetime,
) -> pb.Notification:
    """Store what ``source`` says with one delivery per channel: the log (delivered by the
    caller right after commit) and each webhook (pending, due now)."""
    notification_id = str(uuid.uuid4())
    await conn.execute(
        N.insert().values(
            notification_id=notification_id,
            saga_id=saga_id,
            kind=logic.KIND_TO_DB[source.kind],
            order_id=source.order_id,
            customer_id=source.customer_id,
            message=source.message,
            attributes=dict(source.attributes),
            created_at=now,
        )
    )
    rows = [
        {
            "notification_id": notification_id,
            "channel": logic.LOG_CHANNEL,
            "state": "delivered",
            "attempts": 1,
            "last_error": "",
            "delivered_at": now,
            "next_attempt_at": None,
        }
    ]
    rows += [
        {
            "notification_id": notification_id,
            "channel": url,
            "state": "pending",
            "attempts": 0,
            "last_error": "",
            "delivered_at": None,
            "next_attempt_at": now,
        }
        for url in dict.fromkeys(webhooks)
    ]
    await conn.execute(D.insert(), rows)
    return (await load_notifications(conn, N.c.notification_id == notification_id, webhooks=webhooks))[0]


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
    for d in await conn.execute(select(D).where(D.c.notification_id.in_(ids))):
        by_id[d.notification_id].append(d)
    result = []
    for row in rows:
        found = sorted(by_id[row.notification_id], key=lambda d: _channel_order(d.channel, list(webhooks)))
        result.append(_notification_proto(row, [_delivery_proto(d) for d in found]))
    return result
