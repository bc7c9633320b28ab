"""Batches of step calls: several sagas' Execute calls in one ExecuteStream message, on real
participant processes.

The server serves each request of a message as its own Execute (barrier, metrics, faults,
errors); the coordinator's batcher sends calls alone at low load and together under load.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
import uuid

import grpc
import pytest

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2
from invsaga.notify.v1 import notify_pb2 as pb
from invsaga.notify.v1 import notify_pb2_grpc as pb_grpc
from invsaga.runtime.batch import ExecuteBatcher
from invsaga.runtime.config import METRICS_PORT_OFFSET
from invsaga.runtime.errors import RpcFailure
from invsaga.runtime.stream import RequestList, StreamTransport
from tests.saga_support import WH, MeshClient
from tests.support import start_mesh

NOTIFY = common_pb2.SAGA_STEP_NOTIFY
NOTIFY_FAILURE = common_pb2.SAGA_STEP_NOTIFY_FAILURE


def execute_request(saga_id: str, step: int = NOTIFY, **overrides) -> pb.ExecuteRequest:
    fields = {
        "kind": common_pb2.NOTIFICATION_KIND_RESERVATION_CONFIRMED,
        "order_id": f"ORD-{saga_id[:6]}",
        "customer_id": "CUST-1",
        "message": "stock reserved",
        **overrides,
    }
    return pb.ExecuteRequest(
        context=common_pb2.StepContext(saga_id=saga_id, step=step, idempotency_key=f"{saga_id}/{step}"),
        notify=pb.NotifyInput(**fields),
    )


def new_id() -> str:
    return uuid.uuid4().hex


def handled(mesh, service: str, method: str, code: str = "OK") -> float:
    """The participant's own count of handled calls of ``method`` with ``code``, from /metrics."""
    port = mesh.ports[service] + METRICS_PORT_OFFSET
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for labels, value in re.findall(r"^invsaga_grpc_server_handled_total\{([^}]*)\} (\S+)$", text, re.M):
        if f'grpc_method="{method}"' in labels and f'grpc_code="{code}"' in labels:
            total += float(value)
    return total


def metric(mesh, service: str, name: str) -> float:
    """The sum of a participant's ``name`` samples, from /metrics."""
    port = mesh.ports[service] + METRICS_PORT_OFFSET
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


async def notifications(channel, saga_id: str) -> list[pb.Notification]:
    reply = await pb_grpc.NotifyServiceStub(channel).ListNotifications(pb.ListNotificationsRequest(saga_id=saga_id))
    return list(reply.notifications)


def on_stream(step: pb_grpc.NotifyStepServiceStub) -> StreamTransport:
    return StreamTransport(step.ExecuteStream, step.Execute, pb.ExecuteStreamRequest)


def stream_batcher(step: pb_grpc.NotifyStepServiceStub, **options) -> ExecuteBatcher:
    """The coordinator's batcher over a participant's ExecuteStream (coordinator/participants.py)."""
    stream = on_stream(step)
    return ExecuteBatcher(stream.execute, stream.execute_batch, RequestList, max_in_flight=1, **options)


def messages(mesh, service: str) -> float:
    return metric(mesh, service, "invsaga_execute_stream_messages_total")


@pytest.fixture
def notify_mesh(mesh_factory):
    return mesh_factory(services=["notify"])


async def test_each_request_of_a_batch_is_served_as_its_own_execute(notify_mesh):
    async with grpc.aio.insecure_channel(notify_mesh.address("notify")) as channel:
        step = pb_grpc.NotifyStepServiceStub(channel)
        earlier, first, second, bad = new_id(), new_id(), new_id(), new_id()
        before = await step.Execute(execute_request(earlier))
        executes_before = handled(notify_mesh, "notify", "Execute")

        stream = on_stream(step)
        reply = await stream.execute_batch(
            RequestList(
                [
                    execute_request(first),
                    execute_request(bad, kind=common_pb2.NOTIFICATION_KIND_UNSPECIFIED),
                    execute_request(earlier),  # a repeat: the barrier answers with the first result
                    execute_request(second),
                ]
            ),
            timeout=30,
        )
        stream.close()

        outcomes = [r.WhichOneof("outcome") for r in reply.results]
        assert outcomes == ["response", "error", "response", "response"]
        assert reply.results[0].response.notify.notification.saga_id == first
        assert reply.results[3].response.notify.notification.saga_id == second
        assert reply.results[2].response == before
        error = reply.results[1].error
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        failure = RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, error.message, error.SerializeToString())
        assert [field for field, _ in failure.violations] == ["notify.kind"]
        # Stored as by four Execute calls: one notification each, none for the bad one.
        for saga_id, count in ((first, 1), (second, 1), (earlier, 1), (bad, 0)):
            assert len(await notifications(channel, saga_id)) == count
        # Each request passed the per-call layers as an Execute; the message counts once.
        assert handled(notify_mesh, "notify", "Execute") == executes_before + 3
        assert handled(notify_mesh, "notify", "Execute", "INVALID_ARGUMENT") == 1
        assert messages(notify_mesh, "notify") == 1


async def test_faults_strike_the_requests_of_a_message_not_the_stream(mesh_factory):
    mesh = mesh_factory(
        services=["notify"], env={"INVSAGA_FAULTS": "kind=drop_response,method=Execute,step=NOTIFY_FAILURE"}
    )
    async with grpc.aio.insecure_channel(mesh.address("notify")) as channel:
        step = pb_grpc.NotifyStepServiceStub(channel)
        confirmed, failed = new_id(), new_id()
        stream = on_stream(step)
        reply = await stream.execute_batch(
            RequestList(
                [
                    execute_request(confirmed),
                    execute_request(failed, NOTIFY_FAILURE, kind=common_pb2.NOTIFICATION_KIND_RESERVATION_FAILED),
                ]
            ),
            timeout=30,
        )
        stream.close()

        assert reply.results[0].WhichOneof("outcome") == "response"
        assert reply.results[1].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert "dropped after commit" in reply.results[1].error.message
        # Dropped after commit: the effect happened, only its answer was lost.
        assert len(await notifications(channel, failed)) == 1
        assert len(await notifications(channel, confirmed)) == 1


async def test_the_batcher_sends_calls_together_under_load_and_each_gets_its_own_answer(notify_mesh):
    async with grpc.aio.insecure_channel(notify_mesh.address("notify")) as channel:
        step = pb_grpc.NotifyStepServiceStub(channel)
        batcher = stream_batcher(step)
        ids = [new_id() for _ in range(30)]
        bad = ids[7]

        async def call(saga_id: str):
            kind = (
                common_pb2.NOTIFICATION_KIND_UNSPECIFIED
                if saga_id == bad
                else common_pb2.NOTIFICATION_KIND_RESERVATION_CONFIRMED
            )
            request = execute_request(saga_id, kind=kind)
            try:
                return await batcher(request, timeout=30)
            except grpc.aio.AioRpcError as error:
                return error

        answers = await asyncio.gather(*(call(saga_id) for saga_id in ids))

        assert batcher.batches >= 1 and batcher.batched_calls >= 2
        for saga_id, answer in zip(ids, answers):
            if saga_id == bad:
                assert isinstance(answer, grpc.aio.AioRpcError)
                failure = RpcFailure.from_error(answer)
                assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
                assert [field for field, _ in failure.violations] == ["notify.kind"]
            else:
                assert answer.notify.notification.saga_id == saga_id
        # A batch is one message; a call sent alone is one too.
        assert messages(notify_mesh, "notify") == batcher.batches + len(ids) - batcher.batched_calls


async def test_calls_made_in_the_same_turn_of_the_loop_on_an_idle_batcher_go_as_one_batch(notify_mesh):
    async with grpc.aio.insecure_channel(notify_mesh.address("notify")) as channel:
        step = pb_grpc.NotifyStepServiceStub(channel)
        batcher = stream_batcher(step)
        # As when one answer wakes several sagas: each makes its next call in the same turn.
        ids = [new_id() for _ in range(5)]
        answers = await asyncio.gather(*(batcher(execute_request(i), timeout=30) for i in ids))
        assert [a.notify.notification.saga_id for a in answers] == ids
        assert (batcher.batches, batcher.batched_calls) == (1, 5)
        await asyncio.sleep(0.05)  # the task that sent the batch gives its slot back
        assert batcher.in_flight == 0
        # A call cancelled in the turn it waits gives its slot back; a call alone goes alone.
        first = asyncio.ensure_future(batcher(execute_request(new_id()), timeout=30))
        await asyncio.sleep(0)  # it took the slot and waits one turn
        assert batcher.in_flight == 1
        first.cancel()
        await asyncio.sleep(0)
        assert first.cancelled() and batcher.in_flight == 0
        assert (await batcher(execute_request(ids[0]), timeout=30)).notify.notification.saga_id == ids[0]
        assert batcher.in_flight == 0 and batcher.batches == 1


async def test_a_batch_holds_no_more_request_bytes_than_its_budget(notify_mesh):
    async with grpc.aio.insecure_channel(notify_mesh.address("notify")) as channel:
        step = pb_grpc.NotifyStepServiceStub(channel)
        batcher = stream_batcher(step, max_batch_bytes=1)
        ids = [new_id() for _ in range(12)]

        answers = await asyncio.gather(*(batcher(execute_request(i), timeout=30) for i in ids))

        assert [a.notify.notification.saga_id for a in answers] == ids
        assert batcher.batches == 0  # one request already fills the budget: each went alone


async def test_an_answer_too_large_for_the_channel_is_fetched_again_call_by_call(notify_mesh):
    # Every single answer fits in 4 KB; twenty of them together do not.
    options = [("grpc.max_receive_message_length", 4096)]
    async with grpc.aio.insecure_channel(notify_mesh.address("notify"), options=options) as channel:
        step = pb_grpc.NotifyStepServiceStub(channel)
        batcher = stream_batcher(step)
        ids = [new_id() for _ in range(20)]

        answers = await asyncio.gather(*(batcher(execute_request(i), timeout=30) for i in ids))

        assert [a.notify.notification.saga_id for a in answers] == ids
        assert messages(notify_mesh, "notify") >= 1  # served, then refused by the channel
        for saga_id in ids:  # executed twice, stored once: the barrier answered the repeat
            assert len(await notifications(channel, saga_id)) == 1


async def test_a_waiting_call_times_out_on_its_own_deadline(tmp_path):
    mesh = start_mesh(
        tmp_path,
        services=["notify"],
        env={"INVSAGA_FAULTS": "kind=latency,delay=1.5,method=Execute,step=NOTIFY,times=1"},
    )
    try:
        async with grpc.aio.insecure_channel(mesh.address("notify")) as channel:
            step = pb_grpc.NotifyStepServiceStub(channel)
            batcher = stream_batcher(step)
            slow = asyncio.ensure_future(batcher(execute_request(new_id()), timeout=30))
            await asyncio.sleep(0.2)  # the slow call holds the only slot

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await batcher(execute_request(new_id()), timeout=0.3)

            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert not slow.done()
            assert (await slow).notify.notification.order_id
    finally:
        mesh.stop()


class _ExecuteOnly(pb_grpc.NotifyStepServiceServicer):
    """A participant from before ExecuteStream: its generated base answers UNIMPLEMENTED."""

    async def Execute(self, request, context):
        await asyncio.sleep(0.05)
        return pb.ExecuteResponse(notify=pb.NotifyOutput(notification=pb.Notification(saga_id=request.context.saga_id)))


async def test_concurrent_sagas_complete_through_batches_and_the_books_balance(mesh_factory):
    mesh = mesh_factory()
    client = MeshClient(mesh)
    try:
        warehouses = [WH(f"WH-{i}", priority=i) for i in range(4)]
        await client.seed(warehouses, [(w.warehouse_id, f"SKU-{k}", 1000) for w in warehouses for k in range(6)])

        sagas = await asyncio.gather(*(client.run({f"SKU-{k % 6}": 1 + k % 3}) for k in range(48)))

        assert {s.status for s in sagas} == {coordinator_pb2.SAGA_STATUS_COMPLETED}
        await client.check_books()
        locked = sum(s.locked for s in await client.stock())
        assert locked == sum(1 + k % 3 for k in range(48))
        participants = ("warehouse", "inventory", "allocation", "logistics", "notify")
        calls = sum(handled(mesh, name, "Execute") for name in participants)
        messages = sum(metric(mesh, name, "invsaga_execute_stream_messages_total") for name in participants)
        assert calls >= 48 * 6 and 1 <= messages < calls  # the calls came on streams, some together
    finally:
        await client.close()
