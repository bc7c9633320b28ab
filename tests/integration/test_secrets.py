"""Secrets stay secret: a mesh configured with webhook credentials, a signing key and API
tokens runs sagas and delivers notices; afterwards no log line of any process and no answer of
any RPC called shows any of them, while the webhooks still receive their posts at the full URL.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest
from google.protobuf import text_format

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from invsaga.launcher import free_port
from invsaga.notify.v1 import notify_pb2, notify_pb2_grpc
from invsaga.runtime.security import hash_token
from tests.saga_support import WH, MeshClient
from tests.support import logs_tail, start_mesh

RUN = uuid.uuid4().hex[:10]
SECRETS = {
    "hook user": f"hookuser{RUN}",
    "hook password": f"hookpass{RUN}",
    "hook query key": f"hookkey{RUN}",
    "dead hook user": f"deaduser{RUN}",
    "dead hook password": f"dead/pass{RUN}",  # percent-encoded in the URL
    "dead hook token": f"deadtoken{RUN}",
    "signing key": f"signing{RUN}",
    "API token": f"apitoken{RUN}",
    "service token": f"servicetoken{RUN}",
    "refused token": f"wrongtoken{RUN}",
}


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.posts: list[tuple[str, str, dict]] = []  # path with query, Authorization header, body


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.posts.append((self.path, self.headers.get("Authorization", ""), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


class _Token:
    def __init__(self, token: str) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),)

    def _with_token(self, details):
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self.metadata)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryToken(_Token, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._with_token(details), request)


class _StreamToken(_Token, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._with_token(details), request)


def with_token(token: str) -> list:
    """Client interceptors sending ``token`` on every call (a channel takes one kind per object)."""
    return [_UnaryToken(token), _StreamToken(token)]


class TokenClient(MeshClient):
    """A MeshClient whose every call carries the API token."""

    def __init__(self, mesh, token: str, service_token: str) -> None:
        from invsaga.allocation.v1 import allocation_pb2_grpc
        from invsaga.inventory.v1 import inventory_pb2_grpc
        from invsaga.warehouse.v1 import warehouse_pb2_grpc

        self.mesh = mesh
        self.channels = {
            name: grpc.aio.insecure_channel(mesh.address(name), interceptors=with_token(token))
            for name in mesh.services
        }
        self.coordinator = pb_grpc.SagaCoordinatorServiceStub(self.channels["coordinator"])
        self.warehouse = warehouse_pb2_grpc.WarehouseServiceStub(self.channels["warehouse"])
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(self.channels["inventory"])
        self.allocation = allocation_pb2_grpc.AllocationServiceStub(self.channels["allocation"])
        self.notify = notify_pb2_grpc.NotifyServiceStub(self.channels["notify"])
        # Step RPCs answer the coordinator's identity alone.
        self.channels["notify steps"] = grpc.aio.insecure_channel(
            mesh.address("notify"), interceptors=with_token(service_token)
        )
        self.notify_steps = notify_pb2_grpc.NotifyStepServiceStub(self.channels["notify steps"])


def auth_env(admin_token: str, service_token: str) -> dict[str, str]:
    """An admin's token and the coordinator's service token, as the configuration takes them."""
    return {
        "INVSAGA_AUTH": "token",
        "INVSAGA_AUTH_TOKENS": f"{hash_token(admin_token)}:admin,{hash_token(service_token)}:coordinator",
        "INVSAGA_SERVICE_TOKEN": service_token,
    }


@pytest.fixture(scope="module")
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def urls(receiver) -> tuple[str, str]:
    port = receiver.server_address[1]
    hook = (
        f"http://{SECRETS['hook user']}:{SECRETS['hook password']}@127.0.0.1:{port}"
        f"/hook?key={SECRETS['hook query key']}"
    )
    dead = (
        f"http://{SECRETS['dead hook user']}:{quote(SECRETS['dead hook password'], safe='')}@127.0.0.1:{free_port()}"
        f"/dead?token={SECRETS['dead hook token']}"
    )
    return hook, dead


def scan(text: str) -> list[str]:
    """The names of the secrets ``text`` shows, in any form (percent-encoded too)."""
    return [name for name, value in SECRETS.items() if value in text or quote(value, safe="") in text]


@pytest.mark.timeout(240)
async def test_no_log_line_and_no_answer_shows_a_secret_and_webhooks_still_get_the_full_url(tmp_path, receiver):
    hook, dead = urls(receiver)
    env = {
        "INVSAGA_LOG_LEVEL": "DEBUG",  # every line any process would ever write
        "INVSAGA_WEBHOOKS": f"{hook},{dead}",
        "INVSAGA_WEBHOOK_SECRET": SECRETS["signing key"],
        **auth_env(SECRETS["API token"], SECRETS["service token"]),
    }
    mesh = start_mesh(tmp_path, env=env)
    answers: list[tuple[str, str]] = []  # (what, the answer as text)

    def keep(what: str, message) -> None:
        answers.append((what, text_format.MessageToString(message, as_utf8=True)))
        answers.append((what + " (wire)", message.SerializeToString().decode("utf-8", "replace")))

    c = TokenClient(mesh, SECRETS["API token"], SECRETS["service token"])
    try:
        await c.seed([WH("WH-S1")], [("WH-S1", "SKU-S1", 100)])
        completed = await c.run({"SKU-S1": 2})
        failed = await c.run({"SKU-S1": 1000})
        assert (completed.status, failed.status) == (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED)
        sent = await c.notify.SendNotification(
            notify_pb2.SendNotificationRequest(kind=common_pb2.NOTIFICATION_KIND_LOCK_EXPIRED, order_id="ORD-S")
        )
        keep("SendNotification", sent)
        step_context = common_pb2.StepContext(saga_id=uuid.uuid4().hex, step=common_pb2.SAGA_STEP_NOTIFY)
        execute = notify_pb2.ExecuteRequest(
            context=step_context, notify=notify_pb2.NotifyInput(kind=common_pb2.NOTIFICATION_KIND_RESERVATION_CONFIRMED)
        )
        keep("NotifyStep.Execute", await c.notify_steps.Execute(execute))
        keep("NotifyStep.Execute again", await c.notify_steps.Execute(execute))  # the barrier's stored answer

        # Until the live hook has every notification and the dead one has failed attempts on record.
        deadline = time.monotonic() + 60
        while True:
            listed = await c.notify.ListNotifications(notify_pb2.ListNotificationsRequest(page_size=1000))
            hooks = [d for n in listed.notifications for d in n.deliveries if d.channel != "log"]
            live = [d for d in hooks if d.channel.endswith("/hook")]
            dead_ones = [d for d in hooks if d.channel.endswith("/dead")]
            if (
                len(listed.notifications) == 4
                and all(d.state == notify_pb2.DELIVERY_STATE_DELIVERED for d in live)
                and all(d.attempts >= 2 for d in dead_ones)
            ) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        keep("ListNotifications", listed)
        for saga in (completed, failed):
            keep("GetSaga", await c.get(saga.saga_id))
            async for reply in c.coordinator.WatchSaga(pb.WatchSagaRequest(saga_id=saga.saga_id)):
                keep("WatchSaga", reply)
        keep("ListSagas", await c.coordinator.ListSagas(pb.ListSagasRequest()))
        for call, what in (
            (c.coordinator.GetSaga(pb.GetSagaRequest(saga_id="no-such-saga")), "GetSaga unknown"),
            (c.notify.ListNotifications(notify_pb2.ListNotificationsRequest(kind=99)), "ListNotifications bad"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            answers.append((what, f"{caught.value.code()} {caught.value.details()} {caught.value.trailing_metadata()}"))
        async with grpc.aio.insecure_channel(
            mesh.address("coordinator"), interceptors=with_token(SECRETS["refused token"])
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pb_grpc.SagaCoordinatorServiceStub(channel).ListSagas(pb.ListSagasRequest())
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            answers.append(("refused call", f"{refused.value.details()} {refused.value.trailing_metadata()}"))
    except BaseException:
        print(logs_tail(mesh))
        raise
    finally:
        await c.close()
        mesh.stop()  # the shutdown lines are scanned too

    # The webhook got every notification at its full URL: the query key and the credentials.
    posts = list(receiver.posts)
    basic = "Basic " + base64.b64encode(f"{SECRETS['hook user']}:{SECRETS['hook password']}".encode()).decode()
    assert len(posts) == 4, posts
    assert {path for path, _, _ in posts} == {f"/hook?key={SECRETS['hook query key']}"}
    assert {auth for _, auth, _ in posts} == {basic}

    # Answers show each webhook as scheme://host/path, and nothing secret anywhere.
    channels = {d.channel for n in listed.notifications for d in n.deliveries}
    port = receiver.server_address[1]
    assert f"http://127.0.0.1:{port}/hook" in channels and any(ch.endswith("/dead") for ch in channels), channels
    dead_errors = {d.last_error for n in listed.notifications for d in n.deliveries if d.channel.endswith("/dead")}
    assert dead_errors <= {"connection failed", ""}, dead_errors
    leaks = [(what, scan(text)) for what, text in answers if scan(text)]
    assert leaks == [], leaks

    logs = sorted(Path(mesh.log_dir).rglob("*"))
    assert {p.name for p in logs} >= {f"{s}.log" for s in mesh.services}
    lines = 0
    found: list[tuple[str, int, list[str]]] = []
    for path in logs:
        if path.is_file():
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                lines += 1
                if scan(line):
                    found.append((path.name, number, scan(line)))
    assert lines > 100, "the processes logged too little for the scan to mean anything"
    assert found == [], found[:20]
    # The dead webhook's failures were logged (redacted), so the scan did see its URL's lines.
    notify_log = (Path(mesh.log_dir) / "notify.log").read_text(errors="replace")
    assert "/dead attempt" in notify_log
