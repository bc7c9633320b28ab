"""``invsaga soak --minutes N``: a mesh with faults under steady load, watched over time.

A fresh six-process mesh runs with faults injected into every participant's Execute and
Compensate (latency, UNAVAILABLE, and "commit, then drop the response") while a fixed number
of clients start sagas back to back and follow each to its end. Every minute the run reports
the outcomes, the client-side errors, the p50/p99 of StartSaga → terminal, and the resident
memory (VmRSS from ``/proc/<pid>/status``) of each process; at the end, the drift of the
latency and of the memory between the first and the last minute, and whether the stock
books still balance.

Lock and allocation expiry are short (2 min; the coordinator's sweep releases them) so that
completed sagas give their stock back and the load stays the same shape for the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.bench import percentile, seed_mesh, start_mesh
from invsaga.bench_resources import rss_bytes
from invsaga.launcher import Mesh

DEFAULT_FAULTS = ";".join(
    [
        "kind=latency,delay=0.05,method=Execute,rate=0.05",
        "kind=unavailable,method=Execute,rate=0.02",
        "kind=drop_response,method=Execute,rate=0.02",
        "kind=unavailable,method=Compensate,rate=0.02",
        "kind=drop_response,method=Compensate,rate=0.02",
    ]
)
SOAK_ENV = {
    "INVSAGA_LOG_LEVEL": "WARNING",
    "INVSAGA_RETRY_INITIAL_INTERVAL": "20ms",
    "INVSAGA_RETRY_MAX_INTERVAL": "200ms",
    "INVSAGA_EXPIRY_LOCK": "2m",
    "INVSAGA_EXPIRY_ALLOCATION": "2m",
}
TERMINAL = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED)
WAREHOUSES = 8
SKUS = 20


def soak_seed() -> dict:
    rng = random.Random(11)
    warehouses, stock = [], []
    for w in range(WAREHOUSES):
        wid = f"WH-S{w:02d}"
        warehouses.append(
            {
                "id": wid,
                "name": f"soak {w}",
                "address": "",
                "lat": 30 + w,
                "lon": 110 + w,
                "capacity": 10**9,
                "status": "active",
                "priority": rng.randint(1, 10),
                "cost": {"per_unit": 1.0, "per_km_unit": 0.001, "per_shipment": 10.0},
            }
        )
        for s in range(SKUS):
            stock.append(
                {
                    "warehouse": wid,
                    "sku": f"SKU-S{s:02d}",
                    "product_id": f"PROD-S{s:02d}",
                    "on_hand": 1_000_000,
                    "bin": f"{chr(65 + s % 26)}-{s:02d}",
                }
            )
    return {"warehouses": warehouses, "stock": stock}


@dataclass
class Minute:
    index: int
    outcomes: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    rss: dict[str, int] = field(default_factory=dict)

    def row(self) -> dict:
        return {
            "minute": self.index + 1,
            "sagas": sum(self.outcomes.values()),
            **{outcome.lower(): self.outcomes[outcome] for outcome in ("COMPLETED", "COMPENSATED", "FAILED")},
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "p50_ms": round(percentile(self.latencies, 0.50) * 1000, 1),
            "p99_ms": round(percentile(self.latencies, 0.99) * 1000, 1),
            "rss_mib": {name: round(kib / 1024, 1) for name, kib in self.rss.items()},
        }


def order(rng: random.Random) -> pb.InventoryRequest:
    lines = rng.randint(1, 3)
    skus = rng.sample(range(SKUS), lines)
    items = [
        common_pb2.Item(product_id=f"PROD-S{s:02d}", sku=f"SKU-S{s:02d}", unit="pcs", quantity=rng.randint(1, 5))
        for s in skus
    ]
    # One order in twenty asks for a SKU no warehouse stocks: a business failure, compensated.
    if rng.random() < 0.05:
        items.append(common_pb2.Item(product_id="PROD-NONE", sku="SKU-NONE", unit="pcs", quantity=1))
    return pb.InventoryRequest(
        request_id=uuid.uuid4().hex,
        order_id=f"SOAK-{uuid.uuid4().hex[:10]}",
        customer_id=f"CUST-{rng.randint(1, 500)}",
        items=items,
        allocation_strategy=rng.choice(
            [common_pb2.ALLOCATION_STRATEGY_PRIORITY, common_pb2.ALLOCATION_STRATEGY_LOAD_BALANCE]
        ),
        priority=rng.randint(1, 10),
    )


class Soak:
    def __init__(self, mesh: Mesh, minutes: float, concurrency: int) -> None:
        self.mesh = mesh
        self.minutes = minutes
        self.concurrency = concurrency
        self.started = 0.0
        self.by_minute: list[Minute] = [Minute(i) for i in range(int(minutes + 0.999))]

    def minute(self) -> Minute:
        index = int((time.monotonic() - self.started) // 60)
        return self.by_minute[min(index, len(self.by_minute) - 1)]

    async def worker(self, k: int, stub: pb_grpc.SagaCoordinatorServiceStub, until: float) -> None:
        rng = random.Random(k)
        while time.monotonic() < until:
            t0 = time.monotonic()
            try:
                reply = await stub.StartSaga(pb.StartSagaRequest(request=order(rng)), timeout=10)
                status = pb.SAGA_STATUS_UNSPECIFIED
                async for event in stub.WatchSaga(pb.WatchSagaRequest(saga_id=reply.saga_id), timeout=200):
                    if event.event.status in TERMINAL:
                        status = event.event.status
                if status not in TERMINAL:
                    status = (await stub.GetSaga(pb.GetSagaRequest(saga_id=reply.saga_id), timeout=10)).saga.status
            except grpc.RpcError as err:
                self.minute().errors[err.code().name if err.code() else "UNKNOWN"] += 1
                await asyncio.sleep(0.1)
                continue
            minute = self.minute()
            minute.outcomes[pb.SagaStatus.Name(status).removeprefix("SAGA_STATUS_")] += 1
            minute.latencies.append(time.monotonic() - t0)

    async def sample_memory(self, until: float) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(5)
            minute = self.minute()
            for name, proc in self.mesh.procs.items():
                minute.rss[name] = rss_bytes(proc.pid) // 1024

    async def report(self, until: float) -> None:
        printed = 0
        while printed < len(self.by_minute):
            await asyncio.sleep(1)
            elapsed_minutes = int((time.monotonic() - self.started) // 60)
            while printed < min(elapsed_minutes, len(self.by_minute)) or (
                time.monotonic() >= until and printed < len(self.by_minute)
            ):
                print_minute(self.by_minute[printed].row())
                printed += 1

    async def run(self) -> list[dict]:
        channel = grpc.aio.insecure_channel(self.mesh.address("coordinator"))
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        self.started = time.monotonic()
        until = self.started + self.minutes * 60
        try:
            await asyncio.gather(
                *(self.worker(k, stub, until) for k in range(self.concurrency)),
                self.sample_memory(until),
                self.report(until),
            )
        finally:
            await channel.close()
        return [m.row() for m in self.by_minute]


def print_minute(row: dict) -> None:
    rss = " ".join(f"{name[:5]}={mib:.0f}" for name, mib in row["rss_mib"].items())
    print(
        f"min {row['minute']:>3}  sagas {row['sagas']:>5}  ok {row['completed']:>5}  comp {row['compensated']:>4}  "
        f"failed {row['failed']:>2}  errors {row['errors']:>2}  p50 {row['p50_ms']:>7.1f} ms  p99 {row['p99_ms']:>7.1f} ms"
        f"  RSS MiB {rss}",
        flush=True,
    )


async def paged(call, request_type, field: str, **filters) -> list:
    """Every row of a paged List RPC (``call``), 1,000 at a time."""
    out, token = [], ""
    while True:
        reply = await call(request_type(page_size=1000, page_token=token, **filters), timeout=30)
        out.extend(getattr(reply, field))
        token = reply.next_page_token
        if not token:
            return out


async def check_books(address: str) -> list[str]:
    """on_hand = available + locked, nothing negative, locked = Σ held locks."""
    problems: list[str] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        stock = await paged(stub.ListStock, inventory_pb2.ListStockRequest, "stock")
        locks = await paged(stub.ListLocks, inventory_pb2.ListLocksRequest, "locks", status=common_pb2.LOCK_STATUS_HELD)
    held: Counter = Counter()
    for lock in locks:
        held[(lock.warehouse_id, lock.sku)] += lock.quantity
    for s in stock:
        if min(s.on_hand, s.locked, s.available) < 0 or s.on_hand != s.available + s.locked:
            problems.append(f"{s.warehouse_id}/{s.sku}: on_hand {s.on_hand} locked {s.locked} available {s.available}")
        if s.locked != held[(s.warehouse_id, s.sku)]:
            problems.append(
                f"{s.warehouse_id}/{s.sku}: locked {s.locked} but held locks sum to {held[(s.warehouse_id, s.sku)]}"
            )
    return problems


def summarise(rows: list[dict]) -> dict:
    full = [r for r in rows if r["sagas"]]
    first, last = full[0], full[-1]
    names = list(first["rss_mib"])
    return {
        **{key: sum(r[key] for r in rows) for key in ("sagas", "completed", "compensated", "failed", "errors")},
        "p50_first_last_ms": (first["p50_ms"], last["p50_ms"]),
        "p99_first_last_ms": (first["p99_ms"], last["p99_ms"]),
        "rss_first_last_mib": {n: (first["rss_mib"].get(n, 0), last["rss_mib"].get(n, 0)) for n in names},
    }


async def soak(args: argparse.Namespace) -> int:
    env = {**SOAK_ENV, "INVSAGA_FAULTS": args.faults}
    with tempfile.TemporaryDirectory(prefix="invsaga-soak-") as workdir:
        backend = "the given PostgreSQL" if args.database_url else "an embedded PostgreSQL"
        print(f"soak: {args.minutes:g} min on {backend}, concurrency {args.concurrency}", flush=True)
        print(f"faults on every participant: {args.faults or '(none)'}", flush=True)
        mesh = start_mesh(workdir, "", args.database_url, env)
        try:
            print(await seed_mesh(mesh, soak_seed()), flush=True)
            rows = await Soak(mesh, args.minutes, args.concurrency).run()
            # Let the last retries and compensations settle before the books are read.
            await asyncio.sleep(5)
            problems = await check_books(mesh.address("inventory"))
            exited = {name: proc.returncode for name, proc in mesh.procs.items() if proc.poll() is not None}
        finally:
            mesh.stop()
    summary = summarise(rows)
    summary["books"] = "balanced" if not problems else problems[:10]
    summary["crashed"] = exited
    print("summary: " + json.dumps(summary, ensure_ascii=False), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"minutes": rows, "summary": summary}, indent=1, ensure_ascii=False))
    return 0 if not problems and not exited and summary["failed"] == 0 else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run the load")
    parser.add_argument("--concurrency", type=int, default=16, help="clients starting sagas back to back")
    parser.add_argument("--faults", default=DEFAULT_FAULTS, help="INVSAGA_FAULTS for every process ('' for none)")
    parser.add_argument("--database-url", default=None, help="one database for all (default: an embedded server)")
    parser.add_argument("--json", default=None, help="also write the per-minute figures to this file")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="invsaga soak", description=__doc__)
    add_arguments(parser)
    raise SystemExit(asyncio.run(soak(parser.parse_args(argv))))


if __name__ == "__main__":
    main(sys.argv[1:])
