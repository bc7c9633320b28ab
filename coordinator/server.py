"""The public SagaCoordinatorService: thin adapters over the engine and the store."""

from __future__ import annotations

import uuid

from coordinator import lifecycle, models, plans, transfers, validation
from coordinator.commands import event, new_saga
from coordinator.engine import Engine
from coordinator.hub import EventHub, listen_postgres
from coordinator.journal import Journal
from coordinator.participants import Participants
from coordinator.registry import for_request
from coordinator.transfer_api import TransferRpcs
from coordinator.store import SagaStore, now_ms, request_hash
from coordinator.views import (
    PAGE_BYTES,
    START_REPLY_BYTES,
    event_types_of,
    list_filters,
    not_found,
    require_id,
    resolve_address,
    fit,
    summary,
    tenant_scope,
)
from coordinator.writes import NOTIFY_CHANNEL
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from invsaga.runtime.config import Settings
from invsaga.runtime.convert import next_page_token, page_window
from invsaga.runtime.db import open_service_engine
from invsaga.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from invsaga.runtime import security, telemetry
from invsaga.runtime.metrics import SagaMetrics
from invsaga.runtime.server import App, registration


class CoordinatorServicer(TransferRpcs, pb_grpc.SagaCoordinatorServiceServicer):
    def __init__(self, engine: Engine, store: SagaStore, hub: EventHub, settings: Settings) -> None:
        self.engine = engine
        self.journal = Journal(store, hub, lambda saga_id: saga_id in engine.known)
        self.settings = settings

    async def _saga(self, saga_id: str) -> pb.Saga:
        require_id(saga_id)
        row = await self.journal.load(saga_id, tenant_scope())
        if row is None:
            raise not_found(saga_id)
        return row.saga

    async def StartSaga(self, request: pb.StartSagaRequest, context) -> pb.StartSagaResponse:
        if not request.HasField("request"):
            raise InvalidArgument("request is required", violations=[("request", "required")])
        inventory_request = validation.normalize(request.request, resolve_address=resolve_address)
        if inventory_request.allocation_id:
            try:
                await plans.check(inventory_request, self.engine.participants.channels, self.journal, tenant_scope())
            except (InvalidArgument, FailedPrecondition):
                # A retry of a reservation already started finds its plan used up: _start answers it.
                if not inventory_request.request_id or not await self.journal.request_id_taken(
                    inventory_request.request_id
                ):
                    raise
        if not inventory_request.request_id:
            inventory_request.request_id = uuid.uuid4().hex
        who = security.caller()
        saga_id = uuid.uuid4().hex
        # Held from here until the saga's driver ends (Engine.worker), or released below.
        gate = self.engine.gate
        try:
            await gate.acquire(saga_id, inventory_request.ByteSize(), context.time_remaining() if context else None)
            saga = new_saga(saga_id, inventory_request, for_request(inventory_request))
            return await self._start(saga, request_hash(inventory_request), who)
        except BaseException:
            gate.release(saga_id)
            raise

    async def _start(self, saga: pb.Saga, req_hash: str, who) -> pb.StartSagaResponse:
        """Persist and queue a new saga (any kind); an existing one with its request_id answers
        instead when its request is the same (``req_hash``), else ALREADY_EXISTS."""
        inventory_request = saga.request
        saga.trace_id, trace_context = telemetry.saga_trace_context()
        started = event(saga, 1, pb.SAGA_EVENT_TYPE_SAGA_STARTED)
        row, found = self.journal.create(
            saga,
            [started],
            req_hash=req_hash,
            deadline=now_ms() + int(self.settings.saga.timeout * 1000),
            owner=self.engine.owner,
            lease_ms=self.engine.lease_ms,
            trace_context=trace_context,
            tenant=who.tenant,
        )
        # A copy (the driver changes saga), of a large one only its summary: the client sent it.
        if saga.ByteSize() <= START_REPLY_BYTES:
            response = pb.StartSagaResponse(saga_id=saga.saga_id, saga=saga)
        else:
            brief = summary(saga.saga_id, saga.request_id, saga.status)
            brief.created_at.CopyFrom(saga.created_at)
            brief.trace_id = saga.trace_id
            response = pb.StartSagaResponse(saga_id=saga.saga_id, saga=brief)
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
            self.engine.gate.release(saga.saga_id)
            scope = tenant_scope()
            if scope is not None and existing.tenant != scope:
                # Request ids are unique across tenants: say it is taken, and nothing of whose.
                raise AlreadyExists(
                    f"request_id {inventory_request.request_id!r} is already in use", reason="REQUEST_ID_REUSED"
                )
            if existing.request_hash != req_hash:
                raise AlreadyExists(
                    f"request_id {inventory_request.request_id!r} was used for a different request",
                    reason="REQUEST_ID_REUSED",
                    metadata={"saga_id": existing.saga.saga_id},
                )
            existing.saga.status = existing.status
            return pb.StartSagaResponse(saga_id=existing.saga.saga_id, saga=fit(existing.saga))
        if self.engine.metrics:
            self.engine.metrics.started(response.saga)
        return response

    async def GetSaga(self, request: pb.GetSagaRequest, context) -> pb.GetSagaResponse:
        return pb.GetSagaResponse(saga=fit(await self._saga(request.saga_id)))

    async def ListSagas(self, request: pb.ListSagasRequest, context) -> pb.ListSagasResponse:
        """A page bounded by count and by bytes: it ends early rather than grow past PAGE_BYTES."""
        if request.status not in pb.SagaStatus.values():
            raise InvalidArgument("unknown status", violations=[("status", f"unknown saga status {request.status}")])
        filters = list_filters(request)
        offset, limit = page_window(request.page_size, request.page_token)
        rows, more = await self.journal.list(
            request.status, offset, limit, tenant=tenant_scope(), max_bytes=PAGE_BYTES, filters=filters
        )
        sagas: list[pb.Saga] = []
        size = 0
        for row in rows:
            saga = fit(row.saga)
            entry = saga.ByteSize() + 8  # with its tag and length
            if sagas and size + entry > PAGE_BYTES:
                more = True
                break
            sagas.append(saga)
            size += entry
        token = next_page_token(offset, len(sagas), len(sagas)) if more and sagas else ""
        return pb.ListSagasResponse(sagas=sagas, next_page_token=token)

    async def WatchSaga(self, request: pb.WatchSagaRequest, context):
        require_id(request.saga_id)
        if request.after_seq < 0:
            raise InvalidArgument("after_seq must be ≥ 0", violations=[("after_seq", "must be ≥ 0")])
        wanted = event_types_of(request.event_types)
        if not await self.journal.exists(request.saga_id, tenant_scope()):
            raise not_found(request.saga_id)
        async for ev in self.journal.watch(request.saga_id, request.after_seq, wanted, request.follow_reservation):
            yield pb.WatchSagaResponse(event=ev)

    async def CancelSaga(self, request: pb.CancelSagaRequest, context) -> pb.CancelSagaResponse:
        """Answers with a summary built from the cancel's own write: nothing is read after it,
        so a cancel that took effect is never answered with an error."""
        require_id(request.saga_id)
        if len(request.reason) > validation.MAX_TEXT:
            raise InvalidArgument(
                "reason is too long", violations=[("reason", f"at most {validation.MAX_TEXT} characters")]
            )
        scope = tenant_scope()
        row = await self.journal.load(request.saga_id, scope)
        if row is None:
            raise not_found(request.saga_id)
        if row.status == pb.SAGA_STATUS_COMPLETED and row.saga.HasField("reservation"):
            return pb.CancelSagaResponse(saga=await self._release(row.saga, request, scope))
        claimed = await self.journal.request_cancel(
            request.saga_id, self.engine.owner, self.engine.lease_ms, scope, reason=request.reason
        )
        if claimed is None:
            raise not_found(request.saga_id)
        if claimed.previous == pb.SAGA_STATUS_FAILED:
            raise FailedPrecondition(
                "saga is FAILED: its compensation is parked; use ResumeSaga to retry it",
                reason="SAGA_FAILED",
                metadata={"saga_id": request.saga_id},
            )
        if claimed.previous in (pb.SAGA_STATUS_PENDING, pb.SAGA_STATUS_RUNNING):
            self.engine.cancel_local(request.saga_id, request.reason)
        if claimed.previous == pb.SAGA_STATUS_COMPLETED:
            self.engine.enqueue(request.saga_id, claimed.priority, claimed.is_urgent)
        return pb.CancelSagaResponse(saga=summary(request.saga_id, claimed.request_id, claimed.status))

    async def _release(self, saga: pb.Saga, request: pb.CancelSagaRequest, scope: str | None) -> pb.Saga:
        """CancelSaga of a COMPLETED saga: release what no picker touched (SPEC §9).

        The saga stays COMPLETED; its reservation says what became of each warehouse. A
        repeated cancel of a released reservation answers as the first did.
        """
        state = saga.reservation.state
        if state == lifecycle.RELEASED:
            released = saga
        elif saga.kind == pb.SAGA_KIND_TRANSFER and state in lifecycle.ENDED:
            raise FailedPrecondition(
                "the transfer has shipped: its goods are on the road to the destination",
                reason="TRANSFER_SHIPPED",
                metadata={"saga_id": saga.saga_id, "transfer_state": transfers.state_name(saga.transfer_state)},
            )
        elif state in lifecycle.ENDED:
            raise FailedPrecondition(
                f"the reservation has already ended ({lifecycle.state_name(state)})",
                reason="RESERVATION_ENDED",
                metadata={"saga_id": saga.saga_id, "reservation": lifecycle.state_name(state)},
            )
        else:
            released = await self.engine.keeper.release(
                saga.saga_id,
                lifecycle.RELEASED,
                all_or_nothing=not request.release_unpicked,
                reason=request.reason,
                tenant=scope,
            )
        answer = summary(saga.saga_id, saga.request_id, pb.SAGA_STATUS_COMPLETED)
        answer.reservation.CopyFrom(released.reservation)
        answer.cancel_reason = released.cancel_reason
        return answer

    async def ExtendReservation(self, request: pb.ExtendReservationRequest, context) -> pb.ExtendReservationResponse:
        require_id(request.saga_id)
        if not request.HasField("until"):
            raise InvalidArgument("until is required", violations=[("until", "required")])
        until_ms = lifecycle.ms(request.until)
        now = now_ms()
        cap = int(self.settings.reservation_max_extension * 1000)
        if until_ms <= now:
            raise InvalidArgument("until must be in the future", violations=[("until", "must be in the future")])
        if until_ms > now + cap:
            raise InvalidArgument(
                f"until is more than {self.settings.reservation_max_extension:g} s from now",
                violations=[("until", f"at most {self.settings.reservation_max_extension:g} s from now")],
            )
        row = await self.journal.load(request.saga_id, tenant_scope())
        if row is None:
            raise not_found(request.saga_id)
        if row.saga.kind == pb.SAGA_KIND_TRANSFER:
            raise FailedPrecondition(
                "a transfer does not expire: there is nothing to extend",
                reason="NOT_RESERVED",
                metadata={"saga_id": request.saga_id},
            )
        current = row.saga.reservation.expires_at
        if row.saga.HasField("reservation") and until_ms <= lifecycle.ms(current):
            raise InvalidArgument(
                "until must be later than the reservation's current expiry",
                violations=[("until", "must be later than the current expiry")],
            )
        reservation = await self.engine.keeper.extend(request.saga_id, request.until, tenant_scope())
        return pb.ExtendReservationResponse(reservation=reservation)

    async def ResumeSaga(self, request: pb.ResumeSagaRequest, context) -> pb.ResumeSagaResponse:
        require_id(request.saga_id)
        claimed = await self.journal.claim_failed(
            request.saga_id, self.engine.owner, self.engine.lease_ms, tenant_scope()
        )
        if claimed is None:
            raise not_found(request.saga_id)
        if claimed.previous != pb.SAGA_STATUS_FAILED:
            raise FailedPrecondition(
                f"only a FAILED saga can be resumed; this one is {pb.SagaStatus.Name(claimed.previous)}",
                reason="SAGA_NOT_FAILED",
                metadata={"saga_id": request.saga_id, "status": pb.SagaStatus.Name(claimed.previous)},
            )
        self.engine.enqueue(request.saga_id, claimed.priority, claimed.is_urgent)
        return pb.ResumeSagaResponse(saga=summary(request.saga_id, claimed.request_id, claimed.status))


async def build(settings: Settings) -> App:
    engine_db = await open_service_engine(settings, models.metadata, models.__file__)
    hub = EventHub(settings.journal_sagas, settings.journal_bytes, settings.journal_linger)
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
