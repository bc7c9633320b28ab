"""The notify service as the coordinator and the sweepers use it: a real process over gRPC,
posting to webhooks served by the test on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from invsaga.common.v1 import common_pb2
from invsaga.notify.v1 import notify_pb2 as pb
from invsaga.notify.v1 import notify_pb2_grpc as pb_grpc
from invsaga.runtime.config import load_settings
from invsaga.runtime.convert import from_timestamp
from invsaga.runtime.db import open_service_database
from invsaga.runtime.errors import RpcFailure
from services.notify import models
from services.notify.store import NotifyStore
from tests.support import logs_tail, new_pg_database, start_mesh

SECRET = "test-webhook-secret"
CONFIRMED = common_pb2.NOTIFICATION_KIND_RESERVATION_CONFIRMED


class Receiver(ThreadingHTTPServer):
    """Records every POST; answers 503 to the first ``fail_first[order_id]`` posts of an
    order per path, and to every post of an order in ``blocked``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.fail_first: dict[str, int] = {}
        self.blocked: set[str] = set()
        self.seen: dict[tuple[str, str], int] = defaultdict(int)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def posts(self, path: str, order_id: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for p, h, b in self.received if p == path and json.loads(b).get("order_id") == order_id]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        order_id = json.loads(body).get("order_id", "")
        with self.server.lock:
            self.server.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.server.seen[(self.path, order_id)] += 1
            failing = order_id in self.server.blocked or self.server.seen[
                (self.path, order_id)
            ] <= self.server.fail_first.get(order_id, 0)
        self.send_response(503 if failing else 204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def mesh(receiver, tmp_path_factory):
    env = {"INVSAGA_WEBHOOKS": f"{receiver.url('/hook')},{receiver.url('/audit')}", "INVSAGA_WEBHOOK_SECRET": SECRET}
    started = start_mesh(tmp_path_factory.mktemp("notify"), services=("notify",), env=env)
    yield started
    started.stop()


@pytest.fixture
async def stubs(mesh):
    async with grpc.aio.insecure_channel(mesh.address("notify")) as channel:
        yield pb_grpc.NotifyStepServiceStub(channel), pb_grpc.NotifyServiceStub(channel)


def context(saga_id: str, step=common_pb2.SAGA_STEP_NOTIFY) -> common_pb2.StepContext:
    return common_pb2.StepContext(saga_id=saga_id, step=step, idempotency_key=f"{saga_id}/{step}")


def notify_input(order_id: str, **overrides) -> pb.NotifyInput:
    fields = {
        "kind": CONFIRMED,
        "order_id": order_id,
        "customer_id": "CUST-7",
        "message": "您的订单已预留库存",
        "attributes": {"warehouses": "WH-BJ-01,WH-SH-01"},
        **overrides,
    }
    return pb.NotifyInput(**fields)


async def list_for(service, saga_id: str) -> list[pb.Notification]:
    reply = await service.ListNotifications(pb.ListNotificationsRequest(saga_id=saga_id))
    return list(reply.notifications)


async def delivery_when_settled(service, saga_id: str, channel: str, timeout: float = 15.0) -> pb.Delivery:
    deadline = time.monotonic() + timeout
    while True:
        (notification,) = await list_for(service, saga_id)
        (delivery,) = [d for d in notification.deliveries if d.channel == channel]
        if delivery.state != pb.DELIVERY_STATE_PENDING or time.monotonic() > deadline:
            return delivery
        await asyncio.sleep(0.1)


async def rpc_failure(call) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return RpcFailure.from_error(caught.value)


async def test_execute_sent_three_times_stores_one_notification(stubs):
    step, service = stubs
    saga_id = str(uuid.uuid4())
    request = pb.ExecuteRequest(context=context(saga_id), notify=notify_input("ORD-1"))

    first = await step.Execute(request)
    again = await asyncio.gather(step.Execute(request), step.Execute(request))

    assert {r.notify.notification.notification_id for r in [first, *again]} == {
        first.notify.notification.notification_id
    }
    stored = await list_for(service, saga_id)
    assert [n.notification_id for n in stored] == [first.notify.notification.notification_id]
    log_delivery = stored[0].deliveries[0]
    assert (log_delivery.channel, log_delivery.state, log_delivery.attempts) == ("log", pb.DELIVERY_STATE_DELIVERED, 1)
    assert [d.channel for d in stored[0].deliveries[1:]] == [
        d.channel for d in first.notify.notification.deliveries[1:]
    ]
    assert len(stored[0].deliveries) == 3  # the log and the two webhooks


async def test_compensate_before_execute_is_null_and_refuses_the_late_execute(stubs):
    step, service = stubs
    saga_id = str(uuid.uuid4())

    first = await step.Compensate(pb.CompensateRequest(context=context(saga_id)))
    duplicate = await step.Compensate(pb.CompensateRequest(context=context(saga_id)))
    failure = await rpc_failure(step.Execute(pb.ExecuteRequest(context=context(saga_id), notify=notify_input("ORD-2"))))

    assert first.null_compensation and duplicate.null_compensation
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.reason == "COMPENSATED_BEFORE_EXECUTE"
    assert await list_for(service, saga_id) == []


async def test_compensate_after_execute_keeps_the_notification(stubs):
    step, service = stubs
    saga_id = str(uuid.uuid4())
    await step.Execute(pb.ExecuteRequest(context=context(saga_id), notify=notify_input("ORD-3")))

    reply = await step.Compensate(pb.CompensateRequest(context=context(saga_id)))

    assert not reply.null_compensation
    assert len(await list_for(service, saga_id)) == 1


async def test_webhook_receives_the_notification_as_signed_json(stubs, receiver):
    step, service = stubs
    saga_id, order_id = str(uuid.uuid4()), f"ORD-{uuid.uuid4().hex[:8]}"
    reply = await step.Execute(pb.ExecuteRequest(context=context(saga_id), notify=notify_input(order_id)))
    sent = reply.notify.notification

    delivery = await delivery_when_settled(service, saga_id, receiver.url("/hook"))

    assert (delivery.state, delivery.attempts, delivery.last_error) == (pb.DELIVERY_STATE_DELIVERED, 1, "")
    assert delivery.HasField("delivered_at")
    ((headers, body),) = receiver.posts("/hook", order_id)
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-invsaga-signature"], expected)
    assert headers["content-type"].startswith("application/json")
    payload = json.loads(body)
    assert payload["notification_id"] == sent.notification_id
    assert payload["saga_id"] == saga_id
    assert payload["kind"] == "NOTIFICATION_KIND_RESERVATION_CONFIRMED"
    assert payload["order_id"] == order_id
    assert payload["customer_id"] == "CUST-7"
    assert payload["message"] == "您的订单已预留库存"
    assert payload["attributes"] == {"warehouses": "WH-BJ-01,WH-SH-01"}
    assert payload["created_at"].endswith("Z")
    assert "deliveries" not in payload
    audit = await delivery_when_settled(service, saga_id, receiver.url("/audit"))
    assert audit.state == pb.DELIVERY_STATE_DELIVERED


async def test_webhook_failing_twice_is_delivered_on_the_third_attempt(stubs, receiver):
    step, service = stubs
    saga_id, order_id = str(uuid.uuid4()), f"ORD-{uuid.uuid4().hex[:8]}"
    receiver.fail_first[order_id] = 2

    started = time.monotonic()
    await step.Execute(pb.ExecuteRequest(context=context(saga_id), notify=notify_input(order_id)))
    execute_took = time.monotonic() - started
    delivery = await delivery_when_settled(service, saga_id, receiver.url("/hook"))

    assert execute_took < 1.0  # retries happen after the reply, never inside Execute
    assert (delivery.state, delivery.attempts) == (pb.DELIVERY_STATE_DELIVERED, 3)
    posts = receiver.posts("/hook", order_id)
    assert [h["x-invsaga-attempt"] for h, _ in posts] == ["1", "2", "3"]
    assert len({b for _, b in posts}) == 1  # the same signed body each time


async def test_pending_delivery_is_finished_by_the_restarted_process(mesh, receiver):
    order_id = f"ORD-{uuid.uuid4().hex[:8]}"
    receiver.blocked.add(order_id)
    async with grpc.aio.insecure_channel(mesh.address("notify")) as channel:
        service = pb_grpc.NotifyServiceStub(channel)
        sent = (
            await service.SendNotification(
                pb.SendNotificationRequest(
                    kind=common_pb2.NOTIFICATION_KIND_LOCK_EXPIRED, order_id=order_id, message="lock expired"
                )
            )
        ).notification
        # Wait until the failed first attempt is recorded (the row is pending, not claimed).
        failed_once = await hook_delivery(service, sent.notification_id, receiver, lambda d: d.attempts >= 1)
    assert failed_once.state == pb.DELIVERY_STATE_PENDING and failed_once.last_error == "HTTP 503"

    mesh.kill("notify")
    receiver.blocked.discard(order_id)
    mesh.start_one("notify")
    mesh.wait_ready("notify")

    async with grpc.aio.insecure_channel(mesh.address("notify")) as channel:
        service = pb_grpc.NotifyServiceStub(channel)
        hook = await hook_delivery(
            service, sent.notification_id, receiver, lambda d: d.state != pb.DELIVERY_STATE_PENDING
        )
    assert hook.state == pb.DELIVERY_STATE_DELIVERED, logs_tail(mesh)
    assert hook.attempts >= 2


async def hook_delivery(service, notification_id: str, receiver, done, timeout: float = 10.0) -> pb.Delivery:
    deadline = time.monotonic() + timeout
    while True:
        reply = await service.ListNotifications(
            pb.ListNotificationsRequest(kind=common_pb2.NOTIFICATION_KIND_LOCK_EXPIRED, page_size=1000)
        )
        (found,) = [n for n in reply.notifications if n.notification_id == notification_id]
        hook = next(d for d in found.deliveries if d.channel == receiver.url("/hook"))
        if done(hook) or time.monotonic() > deadline:
            return hook
        await asyncio.sleep(0.02)


async def test_send_and_list_newest_first_with_filters(stubs):
    _, service = stubs
    saga_id = str(uuid.uuid4())
    kinds = [
        common_pb2.NOTIFICATION_KIND_LOCK_EXPIRED,
        common_pb2.NOTIFICATION_KIND_ALLOCATION_EXPIRED,
        common_pb2.NOTIFICATION_KIND_LOCK_EXPIRED,
    ]
    sent = [
        (
            await service.SendNotification(pb.SendNotificationRequest(kind=k, saga_id=saga_id, message=f"#{i}"))
        ).notification
        for i, k in enumerate(kinds)
    ]

    everything = await list_for(service, saga_id)
    locks = await service.ListNotifications(
        pb.ListNotificationsRequest(saga_id=saga_id, kind=common_pb2.NOTIFICATION_KIND_LOCK_EXPIRED)
    )
    page1 = await service.ListNotifications(pb.ListNotificationsRequest(saga_id=saga_id, page_size=2))
    page2 = await service.ListNotifications(
        pb.ListNotificationsRequest(saga_id=saga_id, page_size=2, page_token=page1.next_page_token)
    )

    assert [n.message for n in everything] == ["#2", "#1", "#0"]
    assert [n.notification_id for n in locks.notifications] == [sent[2].notification_id, sent[0].notification_id]
    assert [n.message for n in page1.notifications] == ["#2", "#1"]
    assert [n.message for n in page2.notifications] == ["#0"] and page2.next_page_token == ""


async def test_bad_input_is_invalid_argument_with_field_violations_and_stores_nothing(stubs):
    step, service = stubs
    saga_id = str(uuid.uuid4())
    bad = notify_input("ORD-4", kind=common_pb2.NOTIFICATION_KIND_UNSPECIFIED, message="x" * 257)

    execute = await rpc_failure(step.Execute(pb.ExecuteRequest(context=context(saga_id), notify=bad)))
    send = await rpc_failure(
        service.SendNotification(pb.SendNotificationRequest(kind=0, saga_id=saga_id, customer_id="c" * 300))
    )
    no_input = await rpc_failure(step.Execute(pb.ExecuteRequest(context=context(saga_id))))
    listing = await rpc_failure(service.ListNotifications(pb.ListNotificationsRequest(kind=99)))

    assert execute.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in execute.violations} == {"notify.kind", "notify.message"}
    assert send.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in send.violations} == {"kind", "customer_id"}
    assert no_input.code == grpc.StatusCode.INVALID_ARGUMENT and no_input.violations
    assert listing.code == grpc.StatusCode.INVALID_ARGUMENT and [f for f, _ in listing.violations] == ["kind"]
    assert await list_for(service, saga_id) == []
    # The rejected call claimed no barrier: the corrected one goes through.
    fixed = await step.Execute(pb.ExecuteRequest(context=context(saga_id), notify=notify_input("ORD-4")))
    assert fixed.notify.notification.saga_id == saga_id


async def test_execute_replies_with_the_notification_as_listed(stubs, receiver):
    step, service = stubs
    saga_id = str(uuid.uuid4())

    reply = (await step.Execute(pb.ExecuteRequest(context=context(saga_id), notify=notify_input("ORD-6")))).notify
    (listed,) = await list_for(service, saga_id)

    sent = reply.notification
    assert [d.channel for d in sent.deliveries] == ["log", receiver.url("/hook"), receiver.url("/audit")]
    assert [d.channel for d in listed.deliveries] == [d.channel for d in sent.deliveries]
    assert sent.deliveries[0] == listed.deliveries[0]  # the log: delivered once, when created
    assert sent.deliveries[0].delivered_at == sent.created_at
    assert all(d.state == pb.DELIVERY_STATE_PENDING for d in sent.deliveries[1:])
    sent.ClearField("deliveries")
    listed.ClearField("deliveries")
    assert sent == listed


async def test_stored_notifications_read_back_as_returned_and_an_old_log_row_shows_once():
    """Execute's barrier statement and SendNotification write the same rows (``notification_ctes``)."""
    settings = load_settings("notify", env={}, database_url=new_pg_database())
    db = await open_service_database(settings, models.metadata, models.__file__)
    hooks = ("http://127.0.0.1:9/hook", "http://127.0.0.1:9/audit")
    store, quiet_store = NotifyStore(db, hooks), NotifyStore(db, ())
    source = notify_input("ORD-7", attributes={"城市": "上海", "units": "7", "empty": ""})
    committed = []
    try:
        # A webhook configured twice is one delivery.
        executed = (
            await NotifyStore(db, (*hooks, hooks[0])).execute(context("saga-1"), source, committed.append)
        ).notify.notification
        sent = await store.send("saga-2", pb.SendNotificationRequest(kind=CONFIRMED, order_id="ORD-8"))
        quiet = await quiet_store.send("saga-3", pb.SendNotificationRequest(kind=CONFIRMED, message="quiet"))
        # The row earlier versions stored for the log channel.
        await db.execute(
            "INSERT INTO deliveries (notification_id, channel, state, attempts, last_error, delivered_at)"
            " VALUES (%s, 'log', 'delivered', 1, '', %s)",
            (quiet.notification_id, from_timestamp(quiet.created_at)),
        )
        found = await store.list()
        rows = await db.fetchone("SELECT count(*) AS n FROM deliveries WHERE channel <> 'log'")
    finally:
        await db.close()

    assert committed == [pb.ExecuteResponse(notify=pb.NotifyOutput(notification=executed))]
    assert found == [quiet, sent, executed]  # newest first, each as returned
    assert [d.channel for d in executed.deliveries] == ["log", *hooks]
    assert [d.channel for d in quiet.deliveries] == ["log"]
    assert rows.n == 4


async def test_a_nul_in_any_text_is_invalid_argument_naming_the_field_and_stores_nothing(stubs):
    step, service = stubs
    saga_id = str(uuid.uuid4())
    bad = notify_input("ORD-\x009", customer_id="CUST\x00", attributes={"k": "v\x00"})

    execute = await rpc_failure(step.Execute(pb.ExecuteRequest(context=context(saga_id), notify=bad)))
    in_context = await rpc_failure(
        step.Execute(pb.ExecuteRequest(context=context("saga\x00id"), notify=notify_input("ORD-9")))
    )
    send = await rpc_failure(service.SendNotification(pb.SendNotificationRequest(kind=CONFIRMED, message="a\x00b")))

    assert execute.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in execute.violations} == {"notify.order_id", "notify.customer_id", "notify.attributes"}
    assert in_context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "context.saga_id" in {f for f, _ in in_context.violations}
    assert send.code == grpc.StatusCode.INVALID_ARGUMENT and [f for f, _ in send.violations] == ["message"]
    assert await list_for(service, saga_id) == []
    fixed = await step.Execute(pb.ExecuteRequest(context=context(saga_id), notify=notify_input("ORD-9")))
    assert fixed.notify.notification.saga_id == saga_id


def test_a_webhook_url_is_shown_as_scheme_host_and_path_only():
    from services.notify import logic

    redacted = logic.redact_url("https://u:p%40ss@hooks.example.com:8443/a/b?key=k#f")
    assert redacted == "https://hooks.example.com:8443/a/b"
    assert logic.redact_url("http://[::1]/x?token=t") == "http://[::1]/x"
    assert logic.redact_url("not a url") == "<webhook>"
    formatter = logic.RedactingFormatter(
        logging.Formatter("%(message)s"), ("https://user1:pass1@h.example/p?key=key1",), ("signing1",)
    )
    line = formatter.format(
        logging.LogRecord(
            "x",
            logging.INFO,
            "",
            0,
            "posting %s with %s; pass1 key1 user1",
            ("https://user1:pass1@h.example/p?key=key1", "signing1"),
            None,
        )
    )
    assert line == "posting https://h.example/p with ***; *** *** ***"
