"""Several sagas' step calls to one participant as one message of its ``ExecuteStream``.

A unary call through grpc.aio costs a few hundred microseconds of CPU on each side, far more
than a step's own Python work, and under load most of the mesh's CPU went there. So:

- the server (``serve_requests``, under ``stream.install_execute_stream``) serves each request
  of a message exactly as its own ``Execute`` would be served: the same servicer method, under
  the same per-call layers (metrics and log context, fault injection, the domain-error
  mapping), concurrently, each in its own transaction with its own barrier row and its own
  status. Only gRPC's per-call work is shared. Authentication applies to the stream, as it
  would to each call.
- the client (``ExecuteBatcher``) sends a call on its own while fewer than
  ``max_in_flight`` RPCs to the participant are under way, after one turn of the event loop
  so that the calls made in the same turn go with it. Calls made meanwhile wait, and the
  first RPC to finish sends all of them as one batch. At low load nothing waits; under load a
  batch carries what one round trip gathered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Callable, Sequence

import grpc
from google.protobuf import descriptor_pool

from invsaga.common.v1 import common_pb2
from invsaga.runtime.errors import error_status

log = logging.getLogger("invsaga.batch")

EXECUTE = "Execute"
_DETAILS_KEY = "grpc-status-details-bin"
_CODES = {code.value[0]: code for code in grpc.StatusCode}


# -- server -------------------------------------------------------------------------------------
class _ItemAborted(grpc.aio.AbortError):
    """Raised by ``ItemContext.abort``, as grpc.aio's context raises its ``AbortError`` to end
    the handler (and passed on as that by every layer)."""


class ItemContext:
    """The servicer context one request of a batch is served with.

    It records the status the request ends with (``abort``, ``set_code``) instead of sending
    it; everything about the caller (metadata, peer, deadline) is the batch call's.
    """

    __slots__ = ("_outer", "_code", "_details", "_trailing")

    def __init__(self, outer: Any) -> None:
        self._outer = outer
        self._code: Any = None
        self._details = ""
        self._trailing: tuple = ()

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence = ()) -> None:
        self._code, self._details, self._trailing = code, details, tuple(trailing_metadata or ())
        raise _ItemAborted

    async def abort_with_status(self, status: grpc.Status) -> None:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def code(self) -> Any:
        return self._code

    def details(self) -> str:
        return self._details

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, trailing_metadata: Sequence) -> None:
        self._trailing = tuple(trailing_metadata)

    def invocation_metadata(self) -> Any:
        return self._outer.invocation_metadata()

    def peer(self) -> str:
        return self._outer.peer()

    def auth_context(self) -> Any:
        return self._outer.auth_context()

    def time_remaining(self) -> float | None:
        return self._outer.time_remaining()

    def cancelled(self) -> bool:
        return self._outer.cancelled()

    def status(self) -> common_pb2.CallStatus:
        """The recorded status as a ``CallStatus`` (with the rich details, if any were sent)."""
        for key, value in self._trailing:
            if key == _DETAILS_KEY:
                return common_pb2.CallStatus.FromString(value)  # google.rpc.Status, field for field
        code = self._code if self._code is not None else grpc.StatusCode.UNKNOWN
        number = code if isinstance(code, int) else code.value[0]
        return common_pb2.CallStatus(code=number, message=self._details or "")


def status_of(status: grpc.Status) -> common_pb2.CallStatus:
    """A ``grpc.Status`` (as ``DomainError.to_status`` builds it) as a batch item's ``CallStatus``."""
    for key, value in status.trailing_metadata or ():
        if key == _DETAILS_KEY:
            return common_pb2.CallStatus.FromString(value)
    return common_pb2.CallStatus(code=status.code.value[0], message=status.details or "")


async def serve_one(execute: Callable, result_class: Any, request: Any, outer: Any) -> Any:
    """One request of a batch or stream, served by ``execute`` as its own ``Execute``: its result."""
    context = ItemContext(outer)
    try:
        response = await execute(request, context)
    except _ItemAborted:
        return result_class(error=context.status())
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - mapped as the server maps it (never its text)
        return result_class(error=status_of(error_status(error, "an ExecuteStream request")))
    code = context.code()
    if code is not None and code not in (grpc.StatusCode.OK, 0):
        return result_class(error=context.status())
    return result_class(response=response)


async def serve_requests(execute: Callable, result_class: Any, requests: Sequence[Any], outer: Any) -> list[Any]:
    """Every request served concurrently by ``execute``; their results in order."""
    if len(requests) == 1:
        return [await serve_one(execute, result_class, requests[0], outer)]
    return list(await asyncio.gather(*(serve_one(execute, result_class, item, outer) for item in requests)))


def layered_execute(servicer: Any, service_name: str, layers: Sequence[Any]) -> Callable | None:
    """``servicer.Execute`` under ``layers`` (the server's wrapping interceptors, outermost
    first), as an ``Execute`` call passes them; None if the service has no ``Execute``."""
    service = descriptor_pool.Default().FindServiceByName(service_name)
    if EXECUTE not in service.methods_by_name:
        return None
    handler = grpc.unary_unary_rpc_method_handler(servicer.Execute)
    method = f"/{service_name}/{EXECUTE}"
    for layer in reversed(layers):
        handler = layer.wrap(method, handler)
    return handler.unary_unary


# -- client -------------------------------------------------------------------------------------
def rpc_error(code: grpc.StatusCode, details: str, trailing: grpc.aio.Metadata | None = None) -> grpc.aio.AioRpcError:
    """The error a call that ended with ``code`` raises (no initial metadata)."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing or grpc.aio.Metadata(), details=details)


def item_error(status: common_pb2.CallStatus) -> grpc.aio.AioRpcError:
    """A batch item's status as the error its own ``Execute`` call would have raised."""
    trailing = grpc.aio.Metadata()
    if status.details:
        trailing.add(_DETAILS_KEY, status.SerializeToString())
    return rpc_error(_CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message, trailing)


class _Waiting:
    __slots__ = ("request", "size", "deadline", "future", "timer")

    def __init__(self, request: Any, deadline: float | None, future: asyncio.Future, timer: Any) -> None:
        self.request = request
        self.size = request.ByteSize()
        self.deadline = deadline
        self.future = future
        self.timer = timer


class ExecuteBatcher:
    """``await batcher(request, timeout=...)``: a participant's ``Execute``, batched under load.

    Called exactly like the stub's ``Execute`` (and raising the same errors), so retries and
    deadlines work unchanged. A waiting call's timeout runs from when it was made. If the
    participant takes no batches (``execute_batch`` answers UNIMPLEMENTED: a participant
    without ``ExecuteStream``, an older version during a rolling upgrade), the calls go out
    one by one from then on.

    A batch holds at most ``max_batch`` calls and ``max_batch_bytes`` of requests (one call
    always fits), well under the channel's message limit. If its answer is still too large
    (RESOURCE_EXHAUSTED), its calls are sent again one by one: each has had its effect at most
    once, and its barrier answers the repeat with the first result.
    """

    def __init__(
        self,
        execute: Any,
        execute_batch: Any,
        batch_request: Any,
        *,
        max_in_flight: int | None = 1,
        max_batch: int = 64,
        max_batch_bytes: int = 1 << 20,
    ) -> None:
        self.execute = execute
        self.execute_batch = execute_batch
        self.batch_request = batch_request
        self.max_in_flight = max_in_flight  # None: never batch
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.in_flight = 0
        self.waiting: deque[_Waiting] = deque()
        self.batches = 0  # batch RPCs sent, and the calls they carried
        self.batched_calls = 0
        self._drains: set[asyncio.Task] = set()

    async def __call__(self, request: Any, timeout: float | None = None) -> Any:
        if self.max_in_flight is None:
            return await self.execute(request, timeout=timeout)
        if self.in_flight < self.max_in_flight:
            self.in_flight += 1
            try:
                # One turn of the event loop first: the sagas that one answer woke make their
                # next calls in the same turn, and those go together with this one.
                await asyncio.sleep(0)
            except BaseException:
                self._finished()
                raise
            if self.waiting:
                # Others joined: all go as one batch, sent by a drain that takes this slot.
                item = self._waiting(request, timeout)
                self.waiting.appendleft(item)
                self._start_drain()
                return await item.future
            try:
                return await self.execute(request, timeout=timeout)
            finally:
                self._finished()
        item = self._waiting(request, timeout)
        self.waiting.append(item)
        return await item.future

    @staticmethod
    def _waiting(request: Any, timeout: float | None) -> _Waiting:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        timer = None if timeout is None else DeadlineTimer(loop, timeout, future)
        return _Waiting(request, None if timeout is None else loop.time() + timeout, future, timer)

    def _finished(self) -> None:
        self.in_flight -= 1
        if self.waiting and self.in_flight < (self.max_in_flight or 0):
            self.in_flight += 1
            self._start_drain()

    def _start_drain(self) -> None:
        """Send what waits, in a task that holds one in-flight slot (already counted)."""
        task = asyncio.ensure_future(self._drain())
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch: list[_Waiting] = []
                size = 0
                while self.waiting and len(batch) < self.max_batch:
                    item = self.waiting[0]
                    if batch and size + item.size > self.max_batch_bytes:
                        break
                    self.waiting.popleft()
                    if not item.future.done():  # not given up (timed out, cancelled)
                        batch.append(item)
                        size += item.size
                if batch:
                    await self._send(batch)
        finally:
            self._finished()

    async def _send(self, batch: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        deadlines = [item.deadline for item in batch if item.deadline is not None]
        timeout = None if len(deadlines) < len(batch) else max(0.0, max(deadlines) - loop.time())
        if len(batch) == 1 or self.max_in_flight is None:
            return await self._send_each(batch, timeout)
        try:
            response = await self.execute_batch(
                self.batch_request(requests=[i.request for i in batch]), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                log.warning("participant takes no batches (%s); sending its calls one by one", error.details())
                self.max_in_flight = None
            if code in (
                grpc.StatusCode.UNIMPLEMENTED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ):  # or the answer is too large
                return await self._send_each(batch, timeout)
            return _fail(batch, error)
        except Exception as error:  # cancelled channel and the like: every caller sees it
            return _fail(batch, error)
        self.batches += 1
        self.batched_calls += len(batch)
        if len(response.results) != len(batch):
            answered = f"a batch answered {len(response.results)} results for {len(batch)} requests"
            return _fail(batch, rpc_error(grpc.StatusCode.INTERNAL, answered))
        for item, result in zip(batch, response.results):
            if result.HasField("response"):
                _settle(item, result=result.response)
            else:
                _settle(item, error=item_error(result.error))

    async def _send_each(self, batch: list[_Waiting], timeout: float | None) -> None:
        """Each call of ``batch`` as an ``Execute`` of its own, all at once."""
        await asyncio.gather(*(self._send_one(item, timeout) for item in batch))

    async def _send_one(self, item: _Waiting, timeout: float | None) -> None:
        try:
            response = await self.execute(item.request, timeout=timeout)
        except Exception as error:
            _settle(item, error=error)
        else:
            _settle(item, result=response)


def _fail(batch: list[_Waiting], error: BaseException) -> None:
    for item in batch:
        _settle(item, error=error)


class DeadlineTimer:
    """Fails ``future`` with DEADLINE_EXCEEDED once ``timeout`` seconds have passed.

    Never early: the event loop's clock may run a little behind ``time.monotonic`` (uvloop's
    has millisecond steps), and a caller that checks the deadline after the error must find it
    passed, as it would after gRPC's own DEADLINE_EXCEEDED.
    """

    __slots__ = ("due", "future", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, future: asyncio.Future) -> None:
        self.due = time.monotonic() + timeout
        self.future = future
        self.handle = loop.call_later(timeout, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        left = self.due - time.monotonic()
        if left > 0:
            self.handle = loop.call_later(left + 0.0005, self._fire, loop)
        elif not self.future.done():
            self.future.set_exception(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    def cancel(self) -> None:
        self.handle.cancel()


def _settle(item: _Waiting, *, result: Any = None, error: BaseException | None = None) -> None:
    if item.timer is not None:
        item.timer.cancel()
    if item.future.done():
        return
    if error is not None:
        item.future.set_exception(error)
    else:
        item.future.set_result(result)
