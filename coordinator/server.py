"""The public SagaCoordinatorService: thin adapters over the engine and the store."""

from __future__ import annotations

import uuid

from coordinator import models, validation
from coordinator.driver import TERMINAL_EVENTS, event, new_saga
from coordinator.engine import Engine
from coordinator.hub import EventHub, listen_postgres
from coordinator.steps import Participants
from coordinator.store import TERMINAL, SagaStore, now_ms, request_hash
from coordinator.writes import NOTIFY_CHANNEL
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from invsaga.runtime.config import Settings
from invsaga.runtime.convert import next_page_token, page_window
from invsaga.runtime.db import open_service_engine
from invsaga.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from invsaga.runtime import telemetry
from invsaga.runtime.metrics import SagaMetrics
from invsaga.runtime.server import App, registration

WATCH_POLL_SECONDS = 2.0


def _resolve_address(address: str):
    from services.allocation.geo import UnknownAddress, resolve

    try:
        return resolve(address)
    except UnknownAddress as err:
        raise ValueError(str(err)) from None


def _require_id(saga_id: str) -> None:
    if not saga_id:
        raise InvalidArgument("saga_id is required", violations=[("saga_id", "required")])
    if len(saga_id) > 64:
        raise InvalidArgument("saga_id is too long", violations=[("saga_id", "at most 64 characters")])


EVENT_TYPES = frozenset(pb.SagaEventType.values()) - {pb.SAGA_EVENT_TYPE_UNSPECIFIED}


def _event_types(types) -> frozenset[int] | None:
    """WatchSaga's ``event_types`` as a set (None: every event); unknown values are refused."""
    if not types:
        return None
    bad = [t for t in types if t not in EVENT_TYPES]
    if bad:
        raise InvalidArgument(
            "unknown event type",
            violations=[("event_types", f"unknown saga event type {bad[0]}")],
        )
    return frozenset(types)


class CoordinatorServicer(pb_grpc.SagaCoordinatorServiceServicer):
    def __init__(self, engine: Engine, store: SagaStore, hub: EventHub, settings: Settings) -> None:
        self.engine = engine
        self.store = store
        self.hub = hub
        self.settings = settings

    async def _saga(self, saga_id: str) -> pb.Saga:
        _require_id(saga_id)
        row = await self.store.load(saga_id)
        if row is None:
            raise NotFound(f"saga {saga_id!r} not found", reason="SAGA_NOT_FOUND")
        row.saga.status = row.status
        return row.saga

    async def StartSaga(self, request: pb.StartSagaRequest, context) -> pb.StartSagaResponse:
        if not request.HasField("request"):
            raise InvalidArgument("request is required", violations=[("request", "required")])
        inventory_request = validation.normalize(request.request, resolve_address=_resolve_address)
        if not inventory_request.request_id:
            inventory_request.request_id = uuid.uuid4().hex
        saga = new_saga(uuid.uuid4().hex, inventory_request)
        saga.trace_id, trace_context = telemetry.saga_trace_context()
        started = event(saga, 1, pb.SAGA_EVENT_TYPE_SAGA_STARTED)
        row, found = self.store.create(
            saga,
            [started],
            req_hash=request_hash(inventory_request),
            deadline=now_ms() + int(self.settings.saga.timeout * 1000),
            owner=self.engine.owner,
            lease_ms=self.engine.lease_ms,
            trace_context=trace_context,
        )
        response = pb.StartSagaResponse(saga_id=saga.saga_id, saga=saga)  # a copy: the driver changes saga
        # The first step starts while the insert commits: it only reads, and the driver's first
        # save is queued behind the insert. If the request_id turns out to be taken, nothing
        # was written and the driver is dropped (at most the first two steps, both reads, ran).
        self.engine.enqueue(saga.saga_id, inventory_request.priority, inventory_request.is_urgent, row)
        try:
            existing = await found
        except BaseException:
            self.engine.abandon(saga.saga_id)
            raise
        if existing is not None:
            self.engine.abandon(saga.saga_id)
            if existing.request_hash != request_hash(inventory_request):
                raise AlreadyExists(
                    f"request_id {inventory_request.request_id!r} was used for a different request",
                    reason="REQUEST_ID_REUSED",
                    metadata={"saga_id": existing.saga.saga_id},
                )
            existing.saga.status = existing.status
            return pb.StartSagaResponse(saga_id=existing.saga.saga_id, saga=existing.saga)
        if self.engine.metrics:
            self.engine.metrics.started(response.saga)
        return response

    async def GetSaga(self, request: pb.GetSagaRequest, context) -> pb.GetSagaResponse:
        return pb.GetSagaResponse(saga=await self._saga(request.saga_id))

    async def ListSagas(self, request: pb.ListSagasRequest, context) -> pb.ListSagasResponse:
        if request.status not in pb.SagaStatus.values():
            raise InvalidArgument("unknown status", violations=[("status", f"unknown saga status {request.status}")])
        offset, limit = page_window(request.page_size, request.page_token)
        rows = await self.store.list(request.status, offset, limit)
        sagas = []
        for row in rows:
            row.saga.status = row.status
            sagas.append(row.saga)
        return pb.ListSagasResponse(sagas=sagas, next_page_token=next_page_token(offset, limit, len(rows)))

    async def WatchSaga(self, request: pb.WatchSagaRequest, context):
        _require_id(request.saga_id)
        if request.after_seq < 0:
            raise InvalidArgument("after_seq must be ≥ 0", violations=[("after_seq", "must be ≥ 0")])
        wanted = _event_types(request.event_types)
        if self.hub.journal(request.saga_id) is None and await self.store.status_of(request.saga_id) is None:
            raise NotFound(f"saga {request.saga_id!r} not found", reason="SAGA_NOT_FOUND")
        last = request.after_seq
        events: list[pb.SagaEvent] | None = None  # None: read them from the journal or the database
        # Subscribed before the first read and until the end, so that nothing committed while
        # the stream reads or writes is missed. A filtered watcher is woken only by events it
        # sends or that may end the stream; the others wait in its mailbox.
        subscription = self.hub.subscribe(request.saga_id, None if wanted is None else wanted | set(TERMINAL_EVENTS))
        try:
            while True:
                if events is None:
                    journal = self.hub.journal(request.saga_id)
                    if journal is not None:
                        events = [ev for ev in journal if ev.seq > last]
                    else:
                        events = await self.store.events_after(request.saga_id, last)
                for ev in events:
                    if wanted is None or ev.type in wanted:
                        yield pb.WatchSagaResponse(event=ev)
                    last = ev.seq
                # A terminal event ends the stream unless the saga went on after it (a FAILED
                # saga resumed, a COMPLETED one cancelled): a replay shows all of it.
                at_end = not events or events[-1].type in TERMINAL_EVENTS
                if at_end and await self._at_rest(request.saga_id, last):
                    return
                await subscription.wait(WATCH_POLL_SECONDS)
                live, stale = subscription.take()
                live = [ev for ev in live if ev.seq > last]  # some may have been read already
                # Events handed over from this replica's own commits need no read.
                events = live if live and not stale and live[0].seq == last + 1 else None
        finally:
            self.hub.unsubscribe(request.saga_id, subscription)

    async def _at_rest(self, saga_id: str, last_seq: int) -> bool:
        """Terminal, and no event after ``last_seq`` (a cancel or resume may be under way).

        This replica's journal answers without a read while it shows the saga still going
        (its next commit wakes the watcher), and once it shows it ended, unless the saga is
        queued here again (a cancel after COMPLETED, a resume): then the database decides.
        """
        journal = self.hub.journal(saga_id)
        if journal is not None:
            latest = journal[-1]
            if latest.seq > last_seq or latest.type not in TERMINAL_EVENTS:
                return False
            if saga_id not in self.engine.known:
                return True
        if await self.store.status_of(saga_id) not in TERMINAL:
            return False
        return not await self.store.events_after(saga_id, last_seq, limit=1)

    async def CancelSaga(self, request: pb.CancelSagaRequest, context) -> pb.CancelSagaResponse:
        _require_id(request.saga_id)
        previous = await self.store.request_cancel(request.saga_id, self.engine.owner, self.engine.lease_ms)
        if previous is None:
            raise NotFound(f"saga {request.saga_id!r} not found", reason="SAGA_NOT_FOUND")
        if previous == pb.SAGA_STATUS_FAILED:
            raise FailedPrecondition(
                "saga is FAILED: its compensation is parked; use ResumeSaga to retry it",
                reason="SAGA_FAILED",
                metadata={"saga_id": request.saga_id},
            )
        if previous in (pb.SAGA_STATUS_PENDING, pb.SAGA_STATUS_RUNNING):
            self.engine.cancel_local(request.saga_id)
        if previous == pb.SAGA_STATUS_COMPLETED:
            saga = await self._saga(request.saga_id)
            self.engine.enqueue(saga.saga_id, saga.request.priority, saga.request.is_urgent)
            return pb.CancelSagaResponse(saga=saga)
        return pb.CancelSagaResponse(saga=await self._saga(request.saga_id))

    async def ResumeSaga(self, request: pb.ResumeSagaRequest, context) -> pb.ResumeSagaResponse:
        _require_id(request.saga_id)
        previous = await self.store.claim_failed(request.saga_id, self.engine.owner, self.engine.lease_ms)
        if previous is None:
            raise NotFound(f"saga {request.saga_id!r} not found", reason="SAGA_NOT_FOUND")
        if previous != pb.SAGA_STATUS_FAILED:
            raise FailedPrecondition(
                f"only a FAILED saga can be resumed; this one is {pb.SagaStatus.Name(previous)}",
                reason="SAGA_NOT_FAILED",
                metadata={"saga_id": request.saga_id, "status": pb.SagaStatus.Name(previous)},
            )
        saga = await self._saga(request.saga_id)
        self.engine.enqueue(saga.saga_id, saga.request.priority, saga.request.is_urgent)
        return pb.ResumeSagaResponse(saga=saga)


async def build(settings: Settings) -> App:
    engine_db = await open_service_engine(settings, models.metadata, models.__file__)
    hub = EventHub()
    store = SagaStore(engine_db, on_commit=hub.publish)
    participants = Participants(settings)
    engine = Engine(settings, store, hub, participants)
    engine.metrics = SagaMetrics(in_flight=lambda: len(engine.known))
    engine.start()

    async def listen() -> None:
        await listen_postgres(settings.database_url, NOTIFY_CHANNEL, hub, store.writer.origin)

    async def close() -> None:
        await engine.stop()
        await participants.close()
        await engine_db.dispose()

    return App(
        services=[registration(CoordinatorServicer(engine, store, hub, settings), pb_grpc, "SagaCoordinatorService")],
        background=[listen],
        on_stop=[close],
    )
