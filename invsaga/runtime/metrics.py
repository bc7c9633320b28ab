"""Every Prometheus instrument of the mesh, declared in this one module.

Each process imports the whole set, so a metric's name, type and labels are fixed in one
place (docs/metrics.md lists them); a process only moves the ones its work touches. Labels
stay low in cardinality: steps, outcomes, status codes, methods, warehouses — never saga ids.

Values that are a property of stored data (stock per warehouse) or of the coordinator's
in-memory state (sagas in flight, the oldest one) are computed when Prometheus scrapes,
so the hot path pays nothing for them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Awaitable, Callable, Iterable

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("invsaga.metrics")

# Latency buckets from 1 ms to 30 s: steps are milliseconds on a quiet mesh, seconds when
# retried or slowed; COST_OPTIMIZE allocations run up to their time cap.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SAGA_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)

# -- gRPC, every process --------------------------------------------------------------------
GRPC_HANDLED = Counter(
    "invsaga_grpc_server_handled",
    "RPCs completed by this process's gRPC server, by service, method and status code",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_HANDLING_SECONDS = Histogram(
    "invsaga_grpc_server_handling_seconds",
    "Time from receiving an RPC to its status, by service, method and status code",
    ["grpc_service", "grpc_method", "grpc_code"],
    buckets=LATENCY_BUCKETS,
)
EXECUTE_STREAM_MESSAGES = Counter(
    "invsaga_execute_stream_messages",
    "ExecuteStream messages a step service received; each carries one or more Execute requests",
    ["grpc_service"],
)

# -- coordinator ----------------------------------------------------------------------------
SAGAS_STARTED = Counter("invsaga_sagas_started", "Sagas created by StartSaga (idempotent repeats not counted)")
SAGAS_FINISHED = Counter(
    "invsaga_sagas_finished",
    "Sagas that reached a terminal status, by outcome (completed, compensated, failed) and failure reason",
    ["outcome", "reason"],
)
SAGA_DURATION = Histogram(
    "invsaga_saga_duration_seconds",
    "Time from a saga's creation to its terminal status, by outcome",
    ["outcome"],
    buckets=SAGA_BUCKETS,
)
STEP_DURATION = Histogram(
    "invsaga_step_duration_seconds",
    "Time of a saga step's Execute, retries included, by step and outcome (succeeded, failed)",
    ["step", "outcome"],
    buckets=LATENCY_BUCKETS,
)
STEP_RETRIES = Counter(
    "invsaga_step_retries", "Step Execute calls retried after an error, by step and status code", ["step", "code"]
)
COMPENSATIONS = Counter("invsaga_compensations", "Steps compensated (their effect undone), by step", ["step"])

# -- allocation -----------------------------------------------------------------------------
ALLOCATION_DURATION = Histogram(
    "invsaga_allocation_duration_seconds",
    "Time to plan an allocation, by strategy and outcome (allocated, failed)",
    ["strategy", "outcome"],
    buckets=LATENCY_BUCKETS,
)
EXPIRED_ALLOCATIONS = Counter(
    "invsaga_expired_allocations", "Reservations that expired before picking: their allocation settled EXPIRED"
)

# -- inventory ------------------------------------------------------------------------------
LOCK_FAILURES = Counter(
    "invsaga_lock_failures",
    "LockInventory attempts refused because a line's stock was no longer available, by warehouse",
    ["warehouse"],
)


class SagaMetrics:
    """The coordinator engine's metric hooks (``engine.metrics``).

    ``in_flight`` returns how many sagas this replica has queued or is driving. ``driving``/
    ``done`` bracket the driving of one saga and feed the oldest-saga gauge.
    """

    def __init__(self, in_flight: Callable[[], int]) -> None:
        self._in_flight = in_flight
        self._driving: dict[str, float] = {}  # saga id -> created_at (epoch seconds)
        self._step_children: dict[tuple[str, str], Any] = {}
        COORDINATOR_STATE.metrics = self

    # Engine hooks ---------------------------------------------------------------------------
    def started(self, saga) -> None:
        SAGAS_STARTED.inc()

    def finished(self, saga) -> None:
        from invsaga.coordinator.v1 import coordinator_pb2 as pb

        outcome = pb.SagaStatus.Name(saga.status).removeprefix("SAGA_STATUS_").lower()  # COMPLETED -> completed
        if saga.status == pb.SAGA_STATUS_FAILED:
            reason = saga.compensation_failure.reason or "COMPENSATION_FAILED"
        elif saga.status == pb.SAGA_STATUS_COMPENSATED:
            reason = saga.failure.reason or "UNKNOWN"
        else:
            reason = ""
        SAGAS_FINISHED.labels(outcome, reason).inc()
        if saga.HasField("created_at"):
            SAGA_DURATION.labels(outcome).observe(max(0.0, time.time() - saga.created_at.ToMicroseconds() / 1e6))

    def step(self, step_name: str, outcome: str, seconds: float) -> None:
        key = (step_name, outcome)
        child = self._step_children.get(key)
        if child is None:
            child = self._step_children[key] = STEP_DURATION.labels(step_name, outcome)
        child.observe(seconds)

    def retry(self, step_name: str, code_name: str) -> None:
        STEP_RETRIES.labels(step_name, code_name).inc()

    def compensation(self, step_name: str) -> None:
        COMPENSATIONS.labels(step_name).inc()

    # Driving ---------------------------------------------------------------------------------
    def driving(self, saga_id: str, created_at: float) -> None:
        self._driving[saga_id] = created_at

    def done(self, saga_id: str) -> None:
        self._driving.pop(saga_id, None)

    def in_flight(self) -> int:
        return self._in_flight()

    def oldest_age(self) -> float:
        started = list(self._driving.values())  # one C-level copy: safe against the loop's writes
        return max(0.0, time.time() - min(started)) if started else 0.0


class _CoordinatorState(Collector):
    """In-flight sagas and the age of the oldest one, read at scrape time."""

    def __init__(self) -> None:
        self.metrics: SagaMetrics | None = None

    def describe(self) -> Iterable[Any]:
        return [
            GaugeMetricFamily("invsaga_sagas_in_flight", "Sagas this coordinator replica has queued or is driving"),
            GaugeMetricFamily(
                "invsaga_oldest_running_saga_age_seconds",
                "Age (since creation) of the oldest saga this coordinator replica is driving; 0 when none",
            ),
        ]

    def collect(self) -> Iterable[Any]:
        if self.metrics is None:
            return
        in_flight, oldest = self.describe()
        in_flight.add_metric([], self.metrics.in_flight())
        oldest.add_metric([], self.metrics.oldest_age())
        yield from (in_flight, oldest)


class _InventoryUtilisation(Collector):
    """Per warehouse: units on hand, units locked and their ratio, queried at scrape time.

    The query runs on the process's event loop (the scrape arrives on the HTTP thread); if
    the loop does not answer within ``timeout`` the last values are served.
    """

    timeout = 2.0

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.query: Callable[[], Awaitable[dict[str, tuple[int, int]]]] | None = None
        self.last: dict[str, tuple[int, int]] = {}
        self.lock = threading.Lock()

    def track(self, query: Callable[[], Awaitable[dict[str, tuple[int, int]]]]) -> None:
        self.loop = asyncio.get_running_loop()
        self.query = query

    def _refresh(self) -> dict[str, tuple[int, int]]:
        if self.loop is None or self.query is None or self.loop.is_closed():
            return self.last
        with self.lock:
            future = asyncio.run_coroutine_threadsafe(self.query(), self.loop)
            try:
                self.last = future.result(self.timeout)
            except Exception as err:  # a slow or failing database must not break /metrics
                future.cancel()
                log.warning("inventory utilisation not refreshed: %s", err)
        return self.last

    def describe(self) -> Iterable[Any]:
        return [
            GaugeMetricFamily(
                "invsaga_inventory_utilisation_ratio", "Locked / on-hand units per warehouse", labels=["warehouse"]
            ),
            GaugeMetricFamily("invsaga_inventory_on_hand_units", "Units on hand per warehouse", labels=["warehouse"]),
            GaugeMetricFamily("invsaga_inventory_locked_units", "Units locked per warehouse", labels=["warehouse"]),
        ]

    def collect(self) -> Iterable[Any]:
        if self.query is None:
            return
        ratio, on_hand, locked = self.describe()
        for warehouse, (units, held) in sorted(self._refresh().items()):
            ratio.add_metric([warehouse], held / units if units else 0.0)
            on_hand.add_metric([warehouse], units)
            locked.add_metric([warehouse], held)
        yield from (ratio, on_hand, locked)


COORDINATOR_STATE = _CoordinatorState()
INVENTORY_UTILISATION = _InventoryUtilisation()
REGISTRY.register(COORDINATOR_STATE)
REGISTRY.register(INVENTORY_UTILISATION)


def track_inventory_utilisation(rows: Callable[[], Awaitable[Iterable[tuple[str, Any, Any]]]]) -> None:
    """Serve the utilisation gauges from ``rows()``: (warehouse_id, units on hand, units locked).

    Call from a coroutine on the loop that owns the database behind ``rows`` (a process's ``build``).
    """

    async def query() -> dict[str, tuple[int, int]]:
        return {w: (int(on_hand or 0), int(locked or 0)) for w, on_hand, locked in await rows()}

    INVENTORY_UTILISATION.track(query)
