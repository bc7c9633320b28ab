"""``invsaga demo``: start meshes, run the design's scenarios, print one table of outcomes.

Three meshes, because some scenarios need the fault injector set differently:
- "plain" (allocation slowed by 0.3 s so two racing sagas are planned from the same stock):
  the four strategies on one order, single warehouse, split, shortage, lock conflict, cancel
  while running, cancel after completion;
- "failures": a failure injected once at each of steps 3-6, one saga each;
- "timeout": a 2 s saga timeout against a slow picking step, whose compensation then fails
  three times with an internal error (FAILED, parked) until ResumeSaga finishes it (an
  unreachable participant would be waited for instead, up to the compensation's deadline).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from sqlalchemy.engine import make_url
from rich.console import Console
from rich.table import Table

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from invsaga.launcher import Mesh, random_ports
from invsaga.seed import Seed, apply_seed, load_seed, parse_seed

DEMO_DATA = Path(__file__).resolve().parent / "demo_data.yaml"
GUANGZHOU = common_pb2.Location(address="广东省广州市天河区")
FAST_RETRY = {
    "INVSAGA_RETRY_INITIAL_INTERVAL": "50ms",
    "INVSAGA_RETRY_MAX_INTERVAL": "200ms",
    "INVSAGA_LOG_LEVEL": "WARNING",
}
MESH_ENV = {
    "plain": {"INVSAGA_FAULTS": "kind=latency,delay=0.3,method=Execute,step=ALLOCATE_INVENTORY"},
    "failures": {
        "INVSAGA_FAULTS": ";".join(
            f"kind=error,code=FAILED_PRECONDITION,method=Execute,step={s},times=1"
            for s in ("ALLOCATE_INVENTORY", "LOCK_INVENTORY", "GENERATE_PICKLIST", "NOTIFY")
        )
    },
    "timeout": {
        "INVSAGA_SAGA_TIMEOUT": "2s",
        "INVSAGA_FAULTS": "kind=latency,delay=3,method=Execute,step=GENERATE_PICKLIST,times=1;"
        "kind=error,code=INTERNAL,method=Compensate,step=ALLOCATE_INVENTORY,times=3",
    },
}
SMALL_SEED = {
    "warehouses": [
        {
            "id": "WH-DEMO-A",
            "name": "演示仓 A",
            "address": "上海市浦东新区",
            "lat": 31.22,
            "lon": 121.54,
            "capacity": 1000,
            "status": "active",
            "priority": 5,
            "cost": {"per_unit": 1.0, "per_km_unit": 0.0, "per_shipment": 5.0},
        }
    ],
    "stock": [{"warehouse": "WH-DEMO-A", "sku": "SKU-D1", "product_id": "PROD-D1", "on_hand": 100, "bin": "A-01-01"}],
}
STRATEGIES = ("PRIORITY", "NEAREST", "LOAD_BALANCE", "COST_OPTIMIZE")


@dataclass
class Row:
    scenario: str
    expected: str
    saga: pb.Saga | None
    detail: str = ""
    seconds: float = 0.0
    refusal: str = ""  # the status code of a request refused before any saga started

    @property
    def outcome(self) -> str:
        if self.saga is None:
            return self.refusal or "-"
        return pb.SagaStatus.Name(self.saga.status).removeprefix("SAGA_STATUS_")

    @property
    def ok(self) -> bool:
        return self.outcome == self.expected


def request(items: dict[str, int], strategy: str = "PRIORITY", **fields) -> pb.InventoryRequest:
    return pb.InventoryRequest(
        request_id=uuid.uuid4().hex,
        order_id=f"DEMO-{uuid.uuid4().hex[:6].upper()}",
        customer_id="CUST-DEMO",
        request_type=pb.REQUEST_TYPE_RESERVATION,
        items=[
            common_pb2.Item(product_id=sku.replace("SKU", "PROD"), sku=sku, quantity=q, unit="pcs")
            for sku, q in items.items()
        ],
        allocation_strategy=common_pb2.AllocationStrategy.Value(f"ALLOCATION_STRATEGY_{strategy}"),
        **fields,
    )


class Client:
    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = pb_grpc.SagaCoordinatorServiceStub(self.channel)

    async def start(self, req: pb.InventoryRequest | pb.TransferRequest) -> str:
        if isinstance(req, pb.TransferRequest):
            return (await self.stub.StartTransfer(pb.StartTransferRequest(transfer=req), timeout=10)).saga_id
        return (await self.stub.StartSaga(pb.StartSagaRequest(request=req), timeout=10)).saga_id

    async def wait(self, saga_id: str, after_seq: int = 0) -> pb.Saga:
        async for _ in self.stub.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id, after_seq=after_seq), timeout=120):
            pass
        return (await self.stub.GetSaga(pb.GetSagaRequest(saga_id=saga_id))).saga

    async def run(self, req: pb.InventoryRequest | pb.TransferRequest) -> tuple[pb.Saga, float]:
        """Start a saga (an order, or a transfer) and wait for its end: the saga, and the seconds it took."""
        started = time.monotonic()
        saga = await self.wait(await self.start(req))
        return saga, time.monotonic() - started

    async def last_seq(self, saga_id: str) -> int:
        seq = 0
        async for reply in self.stub.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id), timeout=30):
            seq = reply.event.seq
        return seq


def plan(saga: pb.Saga) -> str:
    if not saga.allocation.lines:
        return ""
    by_wh: dict[str, int] = defaultdict(int)
    for line in saga.allocation.lines:
        by_wh[line.warehouse_id] += line.quantity
    return " + ".join(f"{w}×{q}" for w, q in sorted(by_wh.items())) + f"  cost {saga.allocation.total_cost:.2f}"


def why(saga: pb.Saga) -> str:
    f = saga.failure
    if not f.reason:
        return ""
    compensated = [s.name for s in saga.steps if s.status == pb.STEP_STATUS_COMPENSATED]
    text = f"{f.reason} at {f.step or '-'}"
    if f.shortages:
        text += " (" + ", ".join(f"{s.sku} needs {s.required}, has {s.available}" for s in f.shortages) + ")"
    return text + (f"; compensated {', '.join(compensated)}" if compensated else "; nothing to compensate")


def _scarce(seed: Seed) -> tuple[str, int, int]:
    """A SKU held in two or more active warehouses: (sku, largest single stock, total)."""
    active = {w.warehouse_id for w in seed.warehouses if w.status == common_pb2.WAREHOUSE_STATUS_ACTIVE}
    per_sku: dict[str, list[int]] = defaultdict(list)
    for row in seed.stock:
        if row.warehouse_id in active:
            per_sku[row.sku].append(row.on_hand)
    sku, levels = min(((s, l) for s, l in per_sku.items() if len(l) >= 2), key=lambda x: (sum(x[1]), x[0]))
    return sku, max(levels), sum(levels)


async def plain_scenarios(client: Client, seed: Seed) -> list[Row]:
    rows = []
    for strategy in STRATEGIES:
        saga, secs = await client.run(request({"SKU-001": 40, "SKU-003": 20}, strategy, customer_location=GUANGZHOU))
        rows.append(Row(f"strategy {strategy} (customer in 广州)", "COMPLETED", saga, plan(saga), secs))
    saga, secs = await client.run(request({"SKU-002": 5}))
    rows.append(Row("single warehouse", "COMPLETED", saga, plan(saga), secs))

    sku, largest, total = _scarce(seed)
    saga, secs = await client.run(request({sku: largest + 1}))
    rows.append(Row(f"split over warehouses ({sku} × {largest + 1})", "COMPLETED", saga, plan(saga), secs))

    saga, secs = await client.run(request({"SKU-024": 100_000, "SKU-001": 1}))
    rows.append(Row("insufficient stock", "COMPENSATED", saga, why(saga), secs))

    # Two sagas race for what is left of the scarce SKU: one wins, one is rolled back.
    left = total - (largest + 1)
    started = time.monotonic()
    ids = await asyncio.gather(client.start(request({sku: left})), client.start(request({sku: left})))
    first, second = await asyncio.gather(*(client.wait(i) for i in ids))
    secs = time.monotonic() - started
    won, lost = sorted([first, second], key=lambda s: s.status)
    rows.append(Row(f"lock conflict: winner ({sku} × {left})", "COMPLETED", won, plan(won), secs))
    rows.append(Row("lock conflict: loser", "COMPENSATED", lost, why(lost), secs))

    started = time.monotonic()
    saga_id = await client.start(request({"SKU-005": 3}))
    async for reply in client.stub.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id)):
        if reply.event.step == "AllocateInventory" and reply.event.type == pb.SAGA_EVENT_TYPE_STEP_STARTED:
            break
    await client.stub.CancelSaga(pb.CancelSagaRequest(saga_id=saga_id, reason="demo"))
    saga = await client.wait(saga_id)
    rows.append(Row("cancel while running", "COMPENSATED", saga, why(saga), time.monotonic() - started))

    saga, secs = await client.run(request({"SKU-006": 2}))
    # A COMPLETED saga stays COMPLETED; its reservation is released (docs/lifecycle.md).
    answer = await client.stub.CancelSaga(pb.CancelSagaRequest(saga_id=saga.saga_id, reason="demo"))
    state = common_pb2.ReservationState.Name(answer.saga.reservation.state).removeprefix("RESERVATION_STATE_")
    rows.append(Row("cancel after completion (releases it)", "COMPLETED", saga, f"reservation {state}", secs))
    return rows


async def failure_scenarios(client: Client) -> list[Row]:
    rows = []
    for step, expected in (
        ("AllocateInventory", "COMPENSATED"),
        ("LockInventory", "COMPENSATED"),
        ("GeneratePicklist", "COMPENSATED"),
        ("Notify", "COMPLETED"),
    ):
        saga, secs = await client.run(request({"SKU-D1": 2}))
        detail = why(saga) or "notification failed; the reservation stands"
        rows.append(Row(f"failure injected at {step}", expected, saga, detail, secs))
    return rows


async def timeout_scenarios(client: Client) -> list[Row]:
    saga, secs = await client.run(request({"SKU-D1": 2}))
    rows = [
        Row(
            "saga timeout, compensation fails ×3",
            "FAILED",
            saga,
            f"{why(saga)}; parked: {saga.compensation_failure.message}",
            secs,
        )
    ]
    seq = await client.last_seq(saga.saga_id)
    started = time.monotonic()
    await client.stub.ResumeSaga(pb.ResumeSagaRequest(saga_id=saga.saga_id))
    saga = await client.wait(saga.saga_id, after_seq=seq)
    rows.append(Row("ResumeSaga on the parked saga", "COMPENSATED", saga, why(saga), time.monotonic() - started))
    return rows


def _database_of(database_url: str, mesh: str) -> str:
    """A database of its own for each mesh, on the server of ``database_url`` (created if missing)."""
    import psycopg

    from invsaga.runtime.db import conninfo

    url = make_url(database_url)
    name = f"{url.database or 'invsaga'}_demo_{mesh}"
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def _start_meshes(workdir: Path, database_url: str | None) -> dict[str, Mesh]:
    def start(name: str) -> Mesh:
        mesh = Mesh(
            ports=random_ports(),
            database_url=database_url and _database_of(database_url, name),
            data_dir=str(workdir / name / "data"),
            log_dir=str(workdir / name / "logs"),
            env={**FAST_RETRY, **MESH_ENV[name]},
        )
        return mesh.start(timeout=120)

    with ThreadPoolExecutor(3) as pool:
        futures = {name: pool.submit(start, name) for name in MESH_ENV}
    started = {name: f.result() for name, f in futures.items() if f.exception() is None}
    if len(started) < len(futures):  # stop what did start: no process outlives the demo
        for mesh in started.values():
            mesh.stop()
        next(f.result() for f in futures.values() if f.exception() is not None)
    return started


async def run_demo(workdir: Path, database_url: str | None = None) -> int:
    console = Console()
    where = "the given PostgreSQL server" if database_url else "embedded PostgreSQL servers"
    console.print(f"starting three meshes (18 processes) on {where} ...")
    meshes = _start_meshes(workdir, database_url)
    clients: dict[str, Client] = {}
    try:
        demo_seed = load_seed(DEMO_DATA)
        for name, mesh in meshes.items():  # the demo data on "plain", a small seed on the others
            seed = demo_seed if name == "plain" else parse_seed(SMALL_SEED)
            await apply_seed(seed, mesh.address("warehouse"), mesh.address("inventory"))
        clients = {name: Client(mesh.address("coordinator")) for name, mesh in meshes.items()}
        groups: list[list[Row]] = list(
            await asyncio.gather(
                plain_scenarios(clients["plain"], demo_seed),
                failure_scenarios(clients["failures"]),
                timeout_scenarios(clients["timeout"]),
            )
        )
        # After the orders, so that they do not see the stock the transfers move.
        from invsaga.demo_transfers import transfer_scenarios

        groups.append(await transfer_scenarios(clients["plain"], meshes["plain"].address("logistics")))
    finally:
        for client in clients.values():
            await client.channel.close()
        for mesh in meshes.values():
            mesh.stop()
    rows = [row for group in groups for row in group]
    table = Table(title="invsaga demo", title_justify="left")
    for column in ("scenario", "expected", "outcome", "plan / reason", "s"):
        table.add_column(column, overflow="fold")
    for row in rows:
        style = "green" if row.ok else "red"
        table.add_row(row.scenario, row.expected, f"[{style}]{row.outcome}[/]", row.detail, f"{row.seconds:.2f}")
    console.print(table)
    failed = [row.scenario for row in rows if not row.ok]
    if failed:
        console.print(f"[red]{len(failed)} scenario(s) did not end as expected:[/] {', '.join(failed)}")
        return 1
    console.print(f"all {len(rows)} scenarios ended as expected")
    return 0
