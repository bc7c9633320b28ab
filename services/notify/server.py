"""gRPC adapters of the notify service: thin wrappers over logic.py, store.py and delivery.py."""

from __future__ import annotations

import logging

from invsaga.notify.v1 import notify_pb2 as pb
from invsaga.notify.v1 import notify_pb2_grpc as pb_grpc
from invsaga.runtime.config import Settings
from invsaga.runtime.convert import next_page_token, page_window
from invsaga.runtime.db import open_service_database
from invsaga.runtime.errors import Violations
from invsaga.runtime.server import App, registration
from services.common import check_id, require_input
from services.notify import logic, models
from services.notify.delivery import WebhookDelivery
from services.notify.store import NotifyStore

log = logging.getLogger("invsaga.notify")


class Outbox:
    """Hands notifications on once they are committed: the log line, and the webhook deliveries."""

    def __init__(self, webhooks: tuple[str, ...], delivery: WebhookDelivery) -> None:
        self.webhooks = webhooks
        self.delivery = delivery

    def committed(self, notification: pb.Notification) -> None:
        # The log channel is this line; it is written once, after the row is durable.
        if log.isEnabledFor(logging.INFO):
            log.info(logic.log_line(notification), extra={"event": "notification", "saga_id": notification.saga_id})
        if self.webhooks:
            self.delivery.wake()


class NotifyStepServicer(pb_grpc.NotifyStepServiceServicer):
    def __init__(self, store: NotifyStore, outbox: Outbox) -> None:
        self.store = store
        self.outbox = outbox

    async def Execute(self, request: pb.ExecuteRequest, context) -> pb.ExecuteResponse:
        require_input(request, "notify")
        logic.validate_context(request.context)
        logic.validate_notification(request.notify, "notify.")
        # ``_committed`` is not called for a duplicate: the first call already handed the notification on.
        return await self.store.execute(request.context, request.notify, self._committed)

    def _committed(self, response: pb.ExecuteResponse) -> None:
        self.outbox.committed(response.notify.notification)

    async def Compensate(self, request: pb.CompensateRequest, context) -> pb.CompensateResponse:
        logic.validate_context(request.context)
        return await self.store.compensate(request.context)


class NotifyServicer(pb_grpc.NotifyServiceServicer):
    def __init__(self, store: NotifyStore, outbox: Outbox) -> None:
        self.store = store
        self.outbox = outbox

    async def SendNotification(self, request: pb.SendNotificationRequest, context) -> pb.SendNotificationResponse:
        logic.validate_notification(request)
        notification = await self.store.send(request.saga_id, request)
        self.outbox.committed(notification)
        return pb.SendNotificationResponse(notification=notification)

    async def ListNotifications(self, request: pb.ListNotificationsRequest, context) -> pb.ListNotificationsResponse:
        v = Violations()
        if request.kind and request.kind not in logic.KIND_TO_DB:
            v.add("kind", "unknown notification kind")
        check_id(v, "saga_id", request.saga_id, required=False)
        v.raise_if_any("invalid filter")
        offset, limit = page_window(request.page_size, request.page_token)
        kind = logic.KIND_TO_DB.get(request.kind, "")
        found = await self.store.list(saga_id=request.saga_id, kind=kind, offset=offset, limit=limit)
        return pb.ListNotificationsResponse(
            notifications=found, next_page_token=next_page_token(offset, limit, len(found))
        )


async def build(settings: Settings) -> App:
    # Webhook URLs may carry credentials, and the signing key is a secret: no log line shows them.
    logic.redact_logs(settings.webhooks, (settings.webhook_secret,))
    db = await open_service_database(settings, models.metadata, models.__file__)
    if settings.webhooks and not settings.webhook_secret:
        log.warning("webhooks configured without INVSAGA_WEBHOOK_SECRET: deliveries are not signed")
    store = NotifyStore(db, settings.webhooks)
    delivery = WebhookDelivery(store, settings.webhook_secret)
    outbox = Outbox(settings.webhooks, delivery)
    return App(
        services=[
            registration(NotifyStepServicer(store, outbox), pb_grpc, "NotifyStepService"),
            registration(NotifyServicer(store, outbox), pb_grpc, "NotifyService"),
        ],
        # Always running, even with no webhook configured now: rows left pending by an
        # earlier configuration or a crash are still delivered.
        background=[delivery.run],
        on_stop=[db.close],
    )
