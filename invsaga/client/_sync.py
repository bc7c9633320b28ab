"""``Client``: the synchronous client (grpc's blocking stubs; safe to share between threads)."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator

import grpc

from invsaga.client._common import (
    DEFAULT_WAIT_TIMEOUT,
    GAP,
    TERMINAL_EVENTS,
    ClientBase,
    Deadline,
    Endpoint,
    InvsagaError,
    SagaPage,
    WatchCursor,
    When,
    list_request,
    start_request,
    timestamp,
)
from invsaga.coordinator.v1 import coordinator_pb2 as pb


class Client(ClientBase):
    """The coordinator's public API, with deadlines, retries and a resuming watch built in.

    See the package's docstring (``invsaga.client``) for the rules; docs/integration.md for the
    API it calls.
    """

    def _open(self, where: Endpoint, options: list[tuple[str, Any]]) -> grpc.Channel:
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {where.token}"),) if where.token else ()
        )
        if where.credentials is not None:
            return grpc.secure_channel(where.target, where.credentials, options=options)
        return grpc.insecure_channel(where.target, options=options)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, rpc: Callable[..., Any], request: Any, *, repeatable: bool, timeout: float | None) -> Any:
        retry = self._retry(timeout, repeatable=repeatable)
        while True:
            try:
                return rpc(request, timeout=retry.attempt_timeout(), metadata=self._metadata)
            except grpc.RpcError as error:
                time.sleep(retry.delay(error))

    # -- the API ----------------------------------------------------------------------------------
    def reserve(self, request: Any, *, timeout: float | None = None) -> pb.Saga:
        """StartSaga: the saga as it started (or as it stands, for a request_id seen before).

        ``request``: a StartSagaRequest, an InventoryRequest, or a mapping of its fields. A
        request without a request_id is refused here (INVALID_ARGUMENT), before any call.
        """
        reply = self._call(self._stub.StartSaga, start_request(request), repeatable=True, timeout=timeout)
        return reply.saga

    def get(self, saga_id: str, *, timeout: float | None = None) -> pb.Saga:
        return self._call(self._stub.GetSaga, pb.GetSagaRequest(saga_id=saga_id), repeatable=True, timeout=timeout).saga

    def list_page(
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
        """One page of ListSagas (newest first); pass its ``next_page_token`` for the next."""
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
        reply = self._call(self._stub.ListSagas, request, repeatable=True, timeout=timeout)
        return SagaPage(list(reply.sagas), reply.next_page_token)

    def list(
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
    ) -> Iterator[pb.Saga]:
        """Every saga that matches, page after page as the iteration goes (``limit``: at most
        that many). ``timeout`` is each page's deadline."""
        token, count = "", 0
        while True:
            page = self.list_page(
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

    def watch(
        self,
        saga_id: str,
        after_seq: int = 0,
        follow_reservation: bool = False,
        event_types: Iterable[int | str] = (),
        *,
        timeout: float | None = None,
    ) -> Iterator[pb.SagaEvent]:
        """The saga's events after ``after_seq``, live, until it ends (with
        ``follow_reservation``, until its reservation ends); only ``event_types`` if given.

        A broken stream is resumed after the last event yielded: each event once, in order.
        ``timeout``: a deadline for the whole watch (none by default).
        """
        cursor = WatchCursor(saga_id, after_seq, follow_reservation, event_types, self.retry, timeout)
        while True:
            call = self._stub.WatchSaga(cursor.request(), timeout=cursor.timeout(), metadata=self._metadata)
            try:
                for reply in call:
                    if cursor.accept(reply.event):
                        yield reply.event
                return
            except grpc.RpcError as error:
                wait = cursor.broken(error)
            except GAP:
                wait = cursor.broken(None)
            finally:
                call.cancel()
            time.sleep(wait)

    def wait(self, saga_id: str, timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> pb.Saga:
        """The saga once it is COMPLETED, COMPENSATED or FAILED (DEADLINE_EXCEEDED after ``timeout``)."""
        deadline = Deadline(timeout)
        for _ in self.watch(saga_id, event_types=TERMINAL_EVENTS, timeout=deadline.remaining()):
            pass
        return self.get(saga_id, timeout=deadline.attempt(self.timeout))

    def cancel(
        self, saga_id: str, reason: str = "", release_unpicked: bool = False, *, timeout: float | None = None
    ) -> pb.Saga:
        """CancelSaga: a running saga is compensated; a COMPLETED one's reservation is released
        (``release_unpicked``: only the warehouses no picker touched). Answers with a summary."""
        request = pb.CancelSagaRequest(saga_id=saga_id, reason=reason, release_unpicked=release_unpicked)
        return self._call(self._stub.CancelSaga, request, repeatable=False, timeout=timeout).saga

    def resume(self, saga_id: str, *, timeout: float | None = None) -> pb.Saga:
        """ResumeSaga: retry a FAILED saga's compensation. Answers with a summary."""
        request = pb.ResumeSagaRequest(saga_id=saga_id)
        return self._call(self._stub.ResumeSaga, request, repeatable=False, timeout=timeout).saga

    def extend(self, saga_id: str, until: When, *, timeout: float | None = None) -> pb.Reservation:
        """ExtendReservation: the reservation's new expiry ``until`` (a time, or a timedelta from now)."""
        request = pb.ExtendReservationRequest(saga_id=saga_id, until=timestamp(until, "until"))
        return self._call(self._stub.ExtendReservation, request, repeatable=False, timeout=timeout).reservation


__all__ = ["Client", "InvsagaError"]
