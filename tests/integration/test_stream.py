"""ExecuteStream: step calls as messages on a long-lived stream, on real participant processes.

The server answers each message by its id as soon as its requests are served (each as its own
Execute); the coordinator's transport keeps each call's deadline, opens new streams as it goes,
turns a broken stream into UNAVAILABLE for the calls it carried, and falls back to unary calls
for a participant without the RPC.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from invsaga.common.v1 import common_pb2
from invsaga.notify.v1 import notify_pb2 as pb
from invsaga.notify.v1 import notify_pb2_grpc as pb_grpc
from invsaga.runtime.batch import ExecuteBatcher
from invsaga.runtime.errors import RpcFailure
from invsaga.runtime.retry import TRANSPORT, RetryPolicy, call_with_retry
from invsaga.runtime.stream import RequestList, StreamTransport
from tests.integration.test_batch import NOTIFY_FAILURE, _ExecuteOnly, execute_request, handled, metric, new_id
from tests.support import start_mesh


def transport(step: pb_grpc.NotifyStepServiceStub, **options) -> StreamTransport:
    return StreamTransport(step.ExecuteStream, step.Execute, pb.ExecuteStreamRequest, **options)


@pytest.fixture
def slow_first_notify(tmp_path):
    """notify alone; its first NOTIFY Execute takes 1.5 s."""
    mesh = start_mesh(
        tmp_path,
        services=["notify"],
        env={"INVSAGA_FAULTS": "kind=latency,delay=1.5,method=Execute,step=NOTIFY,times=1"},
    )
    yield mesh
    mesh.stop()


async def test_each_message_is_answered_by_its_id_as_soon_as_its_requests_are_served(slow_first_notify):
    async with grpc.aio.insecure_channel(slow_first_notify.address("notify")) as channel:
        step = pb_grpc.NotifyStepServiceStub(channel)
        slow, fast, bad = new_id(), new_id(), new_id()
        call = step.ExecuteStream()
        await call.write(pb.ExecuteStreamRequest(id=7, requests=[execute_request(slow)]))
        await call.write(
            pb.ExecuteStreamRequest(
                id=8,
                requests=[
                    execute_request(fast, step=NOTIFY_FAILURE),
                    execute_request(bad, kind=common_pb2.NOTIFICATION_KIND_UNSPECIFIED),
                ],
            )
        )
        await call.done_writing()

        answers = [answer async for answer in call]

        assert [a.id for a in answers] == [8, 7]  # the slow request held up only its own message
        assert await call.code() == grpc.StatusCode.OK
        quick, late = answers
        assert quick.results[0].response.notify.notification.saga_id == fast
        error = quick.results[1].error
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        failure = RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, error.message, error.SerializeToString())
        assert [field for field, _ in failure.violations] == ["notify.kind"]
        assert late.results[0].response.notify.notification.saga_id == slow
        # Each request counted as an Execute of its own, the messages once each.
        assert handled(slow_first_notify, "notify", "Execute", "OK") == 2
        assert handled(slow_first_notify, "notify", "Execute", "INVALID_ARGUMENT") == 1
        assert metric(slow_first_notify, "notify", "invsaga_execute_stream_messages_total") == 2


async def test_a_call_past_its_deadline_raises_and_the_stream_goes_on(slow_first_notify):
    async with grpc.aio.insecure_channel(slow_first_notify.address("notify")) as channel:
        stream = transport(pb_grpc.NotifyStepServiceStub(channel))
        late = new_id()

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.execute(execute_request(late), timeout=0.3)
        answer = await stream.execute(execute_request(new_id()), timeout=10)
        repeat = await stream.execute(execute_request(late), timeout=10)  # the barrier has its first result

        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert answer.notify.notification.order_id
        assert repeat.notify.notification.saga_id == late
        assert stream.streams_opened == 1 and not stream.unary
        stream.close()


async def test_calls_move_to_a_new_stream_every_rotate_after_messages(tmp_path):
    mesh = start_mesh(tmp_path, services=["notify"])
    try:
        async with grpc.aio.insecure_channel(mesh.address("notify")) as channel:
            stream = transport(pb_grpc.NotifyStepServiceStub(channel), rotate_after=3)
            ids = [new_id() for _ in range(10)]

            answers = [await stream.execute(execute_request(i), timeout=10) for i in ids]

            assert [a.notify.notification.saga_id for a in answers] == ids
            assert stream.streams_opened == 4
            assert metric(mesh, "notify", "invsaga_execute_stream_messages_total") == 10
            stream.close()
    finally:
        mesh.stop()


async def test_a_broken_stream_fails_its_calls_with_unavailable_and_the_next_call_opens_another(tmp_path):
    mesh = start_mesh(
        tmp_path, services=["notify"], env={"INVSAGA_FAULTS": "kind=latency,delay=5,method=Execute,step=NOTIFY,times=1"}
    )
    try:
        async with grpc.aio.insecure_channel(mesh.address("notify")) as channel:
            stream = transport(pb_grpc.NotifyStepServiceStub(channel))
            batcher = ExecuteBatcher(stream.execute, stream.execute_batch, RequestList, max_in_flight=1)
            stuck = asyncio.ensure_future(batcher(execute_request(new_id()), timeout=30))
            await asyncio.sleep(0.5)
            waiting = [asyncio.ensure_future(batcher(execute_request(new_id()), timeout=30)) for _ in range(3)]
            await asyncio.sleep(0.1)

            mesh.kill("notify")
            errors = await asyncio.gather(stuck, *waiting, return_exceptions=True)
            mesh.start_one("notify", {"INVSAGA_FAULTS": ""})
            mesh.wait_ready("notify")
            saga_id = new_id()
            # As the coordinator's retries do: the channel reconnects after its backoff.
            answer = await call_with_retry(
                batcher, execute_request(saga_id), timeout=10, policy=RetryPolicy(40, 0.25, 0.25, TRANSPORT)
            )

        assert isinstance(errors[0], grpc.aio.AioRpcError) and errors[0].code() == grpc.StatusCode.UNAVAILABLE
        # The waiting calls went after the stuck one failed: to a participant that was down.
        assert all(isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.UNAVAILABLE for e in errors[1:])
        assert answer.notify.notification.saga_id == saga_id
        assert stream.streams_opened >= 2 and not stream.unary
    finally:
        mesh.stop()


async def test_a_participant_without_execute_stream_gets_unary_calls():
    server = grpc.aio.server()
    pb_grpc.add_NotifyStepServiceServicer_to_server(_ExecuteOnly(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = transport(pb_grpc.NotifyStepServiceStub(channel))
            batcher = ExecuteBatcher(stream.execute, stream.execute_batch, RequestList, max_in_flight=1)
            ids = [new_id() for _ in range(8)]

            answers = await asyncio.gather(*(batcher(execute_request(i), timeout=10) for i in ids))

            assert [a.notify.notification.saga_id for a in answers] == ids
            assert stream.unary  # UNIMPLEMENTED once, unary calls from then on
            assert batcher.max_in_flight is None  # and no batches either: each call alone
    finally:
        await server.stop(0)
