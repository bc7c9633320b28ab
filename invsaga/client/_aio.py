"""``AsyncClient``: the asyncio client (grpc.aio), the same methods as ``Client``."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Iterable

import grpc

from invsaga.client._common import (
    DEFAULT_WAIT_TIMEOUT,
    GAP,
    TERMINAL_EVENTS,
    ClientBase,
    Deadline,
    Endpoint,
    SagaPage,
    WatchCursor,
    When,
    list_request,
    start_request,
    timestamp,
)
from invsaga.coordinator.v1 import coordinator_pb2 as pb


class AsyncClient(ClientBase):
    """``Client`` for asyncio: coroutines, and async iterators for ``list`` and ``watch``.

    Create it, and use it, on one event loop (a grpc.aio channel belongs to its loop).
    """

    def _open(self, where: Endpoint, options: list[tuple[str, Any]]) -> grpc.aio.Channel:
        from invsaga.runtime import security, telemetry

        # As invsaga.runtime.channels.open_channel builds them, with the client's reconnection options.
        interceptors = [
            *telemetry.client_interceptors(),
            *(security.bearer_interceptors(where.token) if where.token else []),
        ]
        if where.credentials is not None:
            return grpc.aio.secure_channel(where.target, where.credentials, options=options, interceptors=interceptors)
        return grpc.aio.insecure_channel(where.target, options=options, interceptors=interceptors)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, rpc: Callable[..., Any], request: Any, *, repeatable: bool, timeout: float | None) -> Any:
        retry = self._retry(timeout, repeatable=repeatable)
        while True:
            try:
                return await rpc(request, timeout=retry.attempt_timeout())
            except grpc.RpcError as error:
                await asyncio.sleep(retry.delay(error))

    # -- the API (see Client for each method's rules) ----------------------------------------------
    async def reserve(self, request: Any, *, timeout: float | None = None) -> pb.Saga:
        reply = await self._call(self._stub.StartSaga, start_request(request), repeatable=True, timeout=timeout)
        return reply.saga

    async def get(self, saga_id: str, *, timeout: float | None = None) -> pb.Saga:
        reply = await self._call(
            self._stub.GetSaga, pb.GetSagaRequest(saga_id=saga_id), repeatable=True, timeout=timeout
        )
        return reply.saga

    async def list_page(
        self,
        *,
        status: int | str | None = None,
        order_id: str = "",
        customer_id: str = "",
        created_after: When | None = None,
        created_before: When | None = None,
        reservation_state: int | str | None = None,
        page_size: int = 50,
        page_token: str = "",
        timeout: float | None = None,
    ) -> SagaPage:
        request = list_request(
            status=status,
            order_id=order_id,
            customer_id=customer_id,
            created_after=created_after,
            created_before=created_before,
            reservation_state=reservation_state,
            page_size=page_size,
            page_token=page_token,
        )
        reply = await self._call(self._stub.ListSagas, request, repeatable=True, timeout=timeout)
        return SagaPage(list(reply.sagas), reply.next_page_token)

    async def list(
        self,
        *,
        status: int | str | None = None,
        order_id: str = "",
        customer_id: str = "",
        created_after: When | None = None,
        created_before: When | None = None,
        reservation_state: int | str | None = None,
        page_size: int = 100,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[pb.Saga]:
        token, count = "", 0
        while True:
            page = await self.list_page(
                status=status,
                order_id=order_id,
                customer_id=customer_id,
                created_after=created_after,
                created_before=created_before,
                reservation_state=reservation_state,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
            )
            for saga in page.sagas:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield saga
            token = page.next_page_token
            if not token or (limit is not None and count >= limit):
                return

    async def watch(
        self,
        saga_id: str,
        after_seq: int = 0,
        follow_reservation: bool = False,
        event_types: Iterable[int | str] = (),
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[pb.SagaEvent]:
        cursor = WatchCursor(saga_id, after_seq, follow_reservation, event_types, self.retry, timeout)
        while True:
            call = self._stub.WatchSaga(cursor.request(), timeout=cursor.timeout())
            try:
                async for reply in call:
                    if cursor.accept(reply.event):
                        yield reply.event
                return
            except grpc.RpcError as error:
                wait = cursor.broken(error)
            except GAP:
                wait = cursor.broken(None)
            finally:
                call.cancel()
            await asyncio.sleep(wait)

    async def wait(self, saga_id: str, timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> pb.Saga:
        deadline = Deadline(timeout)
        async for _ in self.watch(saga_id, event_types=TERMINAL_EVENTS, timeout=deadline.remaining()):
            pass
        return await self.get(saga_id, timeout=deadline.attempt(self.timeout))

    async def cancel(
        self, saga_id: str, reason: str = "", release_unpicked: bool = False, *, timeout: float | None = None
    ) -> pb.Saga:
        request = pb.CancelSagaRequest(saga_id=saga_id, reason=reason, release_unpicked=release_unpicked)
        return (await self._call(self._stub.CancelSaga, request, repeatable=False, timeout=timeout)).saga

    async def resume(self, saga_id: str, *, timeout: float | None = None) -> pb.Saga:
        request = pb.ResumeSagaRequest(saga_id=saga_id)
        return (await self._call(self._stub.ResumeSaga, request, repeatable=False, timeout=timeout)).saga

    async def extend(self, saga_id: str, until: When, *, timeout: float | None = None) -> pb.Reservation:
        request = pb.ExtendReservationRequest(saga_id=saga_id, until=timestamp(until, "until"))
        return (await self._call(self._stub.ExtendReservation, request, repeatable=False, timeout=timeout)).reservation
