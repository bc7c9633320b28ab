"""gRPC adapters of the notify service: thin wrappers over logic.py, store.py and delivery.py."""

from __future__ import annotations

import logging

from sqlalchemy import and_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invsaga.notify.v1 import notify_pb2 as pb
from invsaga.notify.v1 import notify_pb2_grpc as pb_grpc
from invsaga.runtime.barrier import (
    compensate_once,
    execute_once,
    execute_once_pg_statement,
    is_postgres,
)
from invsaga.runtime.config import Settings
from invsaga.runtime.convert import next_page_token, page_window, utcnow
from invsaga.runtime.db import open_service_database
from invsaga.runtime.errors import InvalidArgument, Violations
from invsaga.runtime.server import App, registration
from services.notify import logic, models, store
from services.notify.delivery import WebhookDelivery

log = logging.getLogger("invsaga.notify")

N = models.notifications


class Outbox:
    """Stores notifications inside the caller's transaction and hands them on after commit."""

    def __init__(self, webhooks: tuple[str, ...], delivery: WebhookDelivery) -> None:
        self.webhooks = webhooks
        self.delivery = delivery

    async def add(
        self, conn: AsyncConnection, saga_id: str, source: pb.NotifyInput | pb.SendNotificationRequest
    ) -> pb.Notification:
        return await store.insert_notification(conn, saga_id, source, webhooks=self.webhooks, now=utcnow())

    def add_pg(self, saga_id: str, source: pb.NotifyInput) -> tuple[pb.Notification, str, dict]:
        """``add`` as the CTEs of ``execute_once_pg_statement``, with the notification they write."""
        return store.notification_ctes(saga_id, source, webhooks=self.webhooks, now=utcnow())

    def committed(self, notification: pb.Notification) -> None:
        # The log channel is this line; it is written once, after the row is durable.
        if log.isEnabledFor(logging.INFO):
            log.info(logic.log_line(notification), extra={"event": "notification", "saga_id": notification.saga_id})
        if self.webhooks:
            self.delivery.wake()


class NotifyStepServicer(pb_grpc.NotifyStepServiceServicer):
    def __init__(self, engine: AsyncEngine, outbox: Outbox) -> None:
        self.engine = engine
        self.outbox = outbox
        self.postgres = is_postgres(engine)

    async def Execute(self, request: pb.ExecuteRequest, context) -> pb.ExecuteResponse:
        if request.WhichOneof("input") != "notify":
            raise InvalidArgument("Execute needs notify", violations=[("input", "notify required")])
        notify = request.notify
        logic.validate_notification(notify, "notify.")

        saga_id = request.context.saga_id
        # ``_committed`` is not called for a duplicate: the first call already handed the notification on.
        if not self.postgres:

            async def effect(conn: AsyncConnection) -> pb.ExecuteResponse:
                notification = await self.outbox.add(conn, saga_id, notify)
                return pb.ExecuteResponse(notify=pb.NotifyOutput(notification=notification))

            return await execute_once(
                self.engine, models.barrier, request.context, pb.ExecuteResponse, effect, self._committed
            )

        async def effect_pg(conn) -> tuple[pb.ExecuteResponse, str, dict]:
            notification, ctes, params = self.outbox.add_pg(saga_id, notify)
            return pb.ExecuteResponse(notify=pb.NotifyOutput(notification=notification)), ctes, params

        return await execute_once_pg_statement(
            self.engine, request.context, pb.ExecuteResponse, effect_pg, self._committed
        )

    def _committed(self, response: pb.ExecuteResponse) -> None:
        self.outbox.committed(response.notify.notification)

    async def Compensate(self, request: pb.CompensateRequest, context) -> pb.CompensateResponse:
        async def effect(conn: AsyncConnection) -> pb.CompensateResponse:
            return pb.CompensateResponse()  # a sent notification cannot be unsent

        return await compensate_once(
            self.engine,
            models.barrier,
            request.context,
            pb.CompensateResponse,
            effect,
            pb.CompensateResponse(null_compensation=True),
        )


class NotifyServicer(pb_grpc.NotifyServiceServicer):
    def __init__(self, engine: AsyncEngine, outbox: Outbox) -> None:
        self.engine = engine
        self.outbox = outbox

    async def SendNotification(self, request: pb.SendNotificationRequest, context) -> pb.SendNotificationResponse:
        logic.validate_notification(request)
        async with self.engine.begin() as conn:
            notification = await self.outbox.add(conn, request.saga_id, request)
        self.outbox.committed(notification)
        return pb.SendNotificationResponse(notification=notification)

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context
    ) -> pb.ListNotificationsResponse:
        v = Violations()
        if request.kind and request.kind not in logic.KIND_TO_DB:
            v.add("kind", "unknown notification kind")
        if len(request.saga_id) > 64:
            v.add("saga_id", "at most 64 characters")
        v.raise_if_any("invalid filter")
        offset, limit = page_window(request.page_size, request.page_token)
        where = []
        if request.saga_id:
            where.append(N.c.saga_id == request.saga_id)
        if request.kind:
            where.append(N.c.kind == logic.KIND_TO_DB[request.kind])
        condition = and_(*where) if where else None
        async with self.engine.connect() as conn:
            found = await store.load_notifications(
                conn, condition, webhooks=self.outbox.webhooks, offset=offset, limit=limit
            )
        return pb.ListNotificationsResponse(
            notifications=found, next_page_token=next_page_token(offset, limit, len(found))
        )


async def build(settings: Settings) -> App:
    engine = await open_service_database(settings, models.metadata, models.__file__)
    if settings.webhooks and not settings.webhook_secret:
        log.warning("webhooks configured without INVSAGA_WEBHOOK_SECRET: deliveries are not signed")
    delivery = WebhookDelivery(engine, settings.webhook_secret)
    outbox = Outbox(settings.webhooks, delivery)
    return App(
        services=[
            registration(NotifyStepServicer(engine, outbox), pb_grpc, "NotifyStepService"),
            registration(NotifyServicer(engine, outbox), pb_grpc, "NotifyService"),
        ],
        # Always running, even with no webhook configured now: rows left pending by an
        # earlier configuration or a crash are still delivered.
        background=[delivery.run],
        on_stop=[engine.dispose],
    )
