"""``invsaga bench``: start a mesh, seed it, run sagas at a given concurrency, report the figures.

The same run also measures a raw gRPC baseline (empty unary calls between two processes on
this machine), so that ``sagas/s × RPCs per saga ÷ baseline calls/s`` says how close the
mesh comes to what the machine can do, whatever the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
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
from invsaga.launcher import Mesh, free_port, random_ports
from invsaga.runtime.server import tune_gc
from invsaga.seed import apply_seed, parse_seed

# Step RPCs a completed saga makes (six Execute calls) plus StartSaga and one WatchSaga.
RPCS_PER_SAGA = 8
STRATEGY_MIX = ("PRIORITY", "PRIORITY", "NEAREST", "LOAD_BALANCE", "COST_OPTIMIZE")
# What the load's WatchSaga asks for: by default the outcome only, as an order service waiting
# for its reservation would; ``--all-events`` follows every step, as a progress display does.
OUTCOME_EVENTS = (
    pb.SAGA_EVENT_TYPE_SAGA_COMPLETED,
    pb.SAGA_EVENT_TYPE_SAGA_COMPENSATED,
    pb.SAGA_EVENT_TYPE_SAGA_FAILED,
)
CITIES = [
    ("北京市朝阳区", 39.92, 116.44),
    ("上海市浦东新区", 31.22, 121.54),
    ("广东省广州市天河区", 23.13, 113.32),
    ("广东省深圳市南山区", 22.53, 113.93),
    ("四川省成都市武侯区", 30.64, 104.04),
    ("湖北省武汉市江汉区", 30.60, 114.27),
    ("陕西省西安市雁塔区", 34.22, 108.95),
    ("浙江省杭州市西湖区", 30.26, 120.13),
]


def bench_seed(warehouses: int, skus: int) -> dict:
    """``warehouses`` warehouses across eight cities, each stocking every SKU deeply."""
    rng = random.Random(7)
    whs, stock = [], []
    for w in range(warehouses):
        address, lat, lon = CITIES[w % len(CITIES)]
        wid = f"WH-B{w:03d}"
        whs.append(
            {
                "id": wid,
                "name": f"bench {w}",
                "address": address,
                "lat": lat + rng.uniform(-0.2, 0.2),
                "lon": lon + rng.uniform(-0.2, 0.2),
                "capacity": 10**12,
                "status": "active",
                "priority": rng.randint(1, 10),
                "cost": {
                    "per_unit": round(rng.uniform(0.5, 2), 2),
                    "per_km_unit": 0.001,
                    "per_shipment": rng.randint(5, 30),
                },
            }
        )
        for s in range(skus):
            stock.append(
                {
                    "warehouse": wid,
                    "sku": f"SKU-B{s:03d}",
                    "product_id": f"PROD-B{s:03d}",
                    "on_hand": 10**9,
                    "bin": f"{chr(65 + s % 26)}-{s:02d}",
                }
            )
    return {"warehouses": whs, "stock": stock}


async def seed_mesh(mesh: Mesh, seed: dict) -> str:
    """``seed`` (the shape of ``bench_seed``) upserted into ``mesh``; what was done."""
    return await apply_seed(parse_seed(seed), mesh.address("warehouse"), mesh.address("inventory"))


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    started: float = 0.0
    finished: float = 0.0

    @property
    def completed(self) -> int:
        return self.outcomes["COMPLETED"]

    @property
    def throughput(self) -> float:
        return self.completed / max(self.finished - self.started, 1e-9)

    def percentile(self, q: float) -> float:
        return percentile(self.latencies, q, empty=float("nan"))


def percentile(values: list[float], q: float, empty: float = 0.0) -> float:
    """The ``q`` quantile of ``values`` (nearest rank); ``empty`` when there are none."""
    if not values:
        return empty
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def order(rng: random.Random, lines: int, skus: int, hot: int) -> pb.InventoryRequest:
    strategy = rng.choice(STRATEGY_MIX)
    pool = range(hot) if hot else range(skus)
    chosen = rng.sample(list(pool), min(lines, len(pool)))
    address, lat, lon = rng.choice(CITIES)
    return pb.InventoryRequest(
        request_id=uuid.uuid4().hex,
        order_id=f"BENCH-{uuid.uuid4().hex[:10]}",
        customer_id=f"C-{rng.randint(1, 10_000)}",
        items=[
            common_pb2.Item(sku=f"SKU-B{s:03d}", product_id=f"PROD-B{s:03d}", quantity=rng.randint(1, 5))
            for s in chosen
        ],
        allocation_strategy=common_pb2.AllocationStrategy.Value(f"ALLOCATION_STRATEGY_{strategy}"),
        priority=rng.randint(1, 10),
        customer_location=common_pb2.Location(lat=lat, lon=lon),
    )


async def run_load(address: str, args: argparse.Namespace) -> Results:
    results = Results()
    rng = random.Random(11)
    remaining = args.sagas
    stop_at = time.monotonic() + args.duration if args.duration else None
    channels = [grpc.aio.insecure_channel(address) for _ in range(4)]
    stubs = [pb_grpc.SagaCoordinatorServiceStub(ch) for ch in channels]
    event_types = () if args.all_events else OUTCOME_EVENTS

    async def worker(k: int) -> None:
        nonlocal remaining
        stub = stubs[k % len(stubs)]
        while True:
            if stop_at is not None:
                if time.monotonic() >= stop_at:
                    return
            else:
                if remaining <= 0:
                    return
                remaining -= 1
            request = order(rng, args.lines, args.skus, args.hot_skus)
            t0 = time.monotonic()
            try:
                reply = await stub.StartSaga(pb.StartSagaRequest(request=request), timeout=30)
                status = reply.saga.status
                watch = pb.WatchSagaRequest(saga_id=reply.saga_id, event_types=event_types)
                async for item in stub.WatchSaga(watch, timeout=300):
                    status = item.event.status
            except grpc.aio.AioRpcError as error:
                results.errors[error.code().name] += 1
                continue
            results.latencies.append(time.monotonic() - t0)
            results.outcomes[pb.SagaStatus.Name(status).removeprefix("SAGA_STATUS_")] += 1

    results.started = time.monotonic()
    await asyncio.gather(*(worker(k) for k in range(args.concurrency)))
    results.finished = time.monotonic()
    for channel in channels:
        await channel.close()
    return results


BASELINE_SERVER = """
import asyncio, sys, grpc
async def main():
    server = grpc.aio.server()
    async def ping(request, context):
        return b""
    handler = grpc.method_handlers_generic_handler("bench.Baseline", {
        "Ping": grpc.unary_unary_rpc_method_handler(ping)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()
import uvloop
uvloop.run(main())
"""


async def baseline(seconds: float = 3.0, concurrency: int = 64) -> float:
    """Empty unary calls/s from this process to a second one."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", BASELINE_SERVER, str(port)], stdout=subprocess.PIPE)
    assert server.stdout is not None  # stdout=PIPE
    try:
        server.stdout.readline()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            ping = channel.unary_unary("/bench.Baseline/Ping")
            await ping(b"", timeout=10)
            count = 0
            end = time.monotonic() + seconds

            async def loop() -> None:
                nonlocal count
                while time.monotonic() < end:
                    await ping(b"", timeout=10)
                    count += 1

            start = time.monotonic()
            await asyncio.gather(*(loop() for _ in range(concurrency)))
            return count / (time.monotonic() - start)
    finally:
        server.terminate()
        server.wait()


async def watchers(address: str, args: argparse.Namespace) -> tuple[int, int, Counter]:
    """``args.watchers`` WatchSaga streams on running sagas (ten per saga): (streams ended, events, errors)."""
    rng = random.Random(5)
    errors: Counter = Counter()
    ended = events = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        ids = [
            (await stub.StartSaga(pb.StartSagaRequest(request=order(rng, 1, args.skus, 0)), timeout=30)).saga_id
            for _ in range(max(1, args.watchers // 10))
        ]

        async def watch(saga_id: str) -> None:
            nonlocal ended, events
            try:
                async for _ in stub.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id), timeout=120):
                    events += 1
                ended += 1
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] += 1

        await asyncio.gather(*(watch(ids[k % len(ids)]) for k in range(args.watchers)))
    return ended, events, errors


def bench_env(args: argparse.Namespace, extra: bool = True) -> dict[str, str]:
    """The environment of a bench's mesh; ``extra``: with the ``--coordinator-env`` settings."""
    env = {"INVSAGA_LOG_LEVEL": "WARNING", "INVSAGA_MAX_CONCURRENT_SAGAS": str(max(64, args.concurrency))}
    if extra and args.coordinator_env:
        env.update(dict(item.split("=", 1) for item in args.coordinator_env))
    return env


def start_mesh(workdir: str, label: str, database_url: str | None, env: dict[str, str]) -> Mesh:
    """A mesh on random ports, its data and logs in ``workdir``/``label``, started."""
    mesh = Mesh(
        ports=random_ports(),
        database_url=database_url,
        data_dir=str(Path(workdir) / label / "data"),
        log_dir=str(Path(workdir) / label / "logs"),
        env=env,
    )
    mesh.start(timeout=120)
    return mesh


def postgres_cpu_seconds() -> float:
    """CPU seconds of every PostgreSQL server process on this machine (0 if none can be read)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if "(postgres)" in text:
            total += cpu_seconds(int(stat.parent.name))
    return total


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench(args: argparse.Namespace) -> int:
    if args.list:
        from invsaga.bench_list import list_bench

        return await list_bench(args)
    if args.connections or args.memory:
        from invsaga import bench_resources

        return await (bench_resources.connections if args.connections else bench_resources.memory)(args)
    with tempfile.TemporaryDirectory(prefix="invsaga-bench-") as workdir:
        env = bench_env(args)
        if args.watchers:
            # Slow picking keeps the watched sagas running while the watchers connect.
            env["INVSAGA_FAULTS"] = "kind=latency,delay=3,method=Execute,step=GENERATE_PICKLIST"
        print(
            f"starting the mesh on {'the given PostgreSQL' if args.database_url else 'an embedded PostgreSQL'} ...",
            flush=True,
        )
        mesh = start_mesh(workdir, "", args.database_url, env)
        try:
            print(await seed_mesh(mesh, bench_seed(args.warehouses, args.skus)), flush=True)
            if args.watchers:
                started = time.monotonic()
                ended, seen, errors = await watchers(mesh.address("coordinator"), args)
                print(
                    f"watchers: {args.watchers} concurrent WatchSaga streams on {max(1, args.watchers // 10)} running "
                    f"sagas; {ended} ended at the terminal event, {seen} events, errors: {dict(errors) or 'none'}, "
                    f"{time.monotonic() - started:.1f} s"
                )
                return 0 if not errors and ended == args.watchers else 1
            calls = await baseline()
            print(f"baseline: {calls:,.0f} empty unary calls/s between two processes", flush=True)
            warm = argparse.Namespace(**{**vars(args), "sagas": min(50, args.sagas), "duration": 0})
            await run_load(mesh.address("coordinator"), warm)
            tune_gc()  # the load generator shares the two cores: keep its collector quiet too
            before = {name: cpu_seconds(proc.pid) for name, proc in mesh.procs.items()}
            before["postgres"] = postgres_cpu_seconds()
            before["load generator"] = time.process_time()
            what = f"{args.duration:g} s" if args.duration else f"{args.sagas} sagas"
            print(
                f"running {what} at concurrency {args.concurrency}, {args.lines} line(s) per order, "
                f"{args.warehouses} warehouses{f', {args.hot_skus} hot SKUs' if args.hot_skus else ''}, "
                f"watching {'every event' if args.all_events else 'the outcome'} ...",
                flush=True,
            )
            results = await run_load(mesh.address("coordinator"), args)
            used = {name: cpu_seconds(proc.pid) - before[name] for name, proc in mesh.procs.items()}
            used["postgres"] = postgres_cpu_seconds() - before["postgres"]
            used["load generator"] = time.process_time() - before["load generator"]
        finally:
            mesh.stop()
    elapsed = results.finished - results.started
    print(
        f"sagas: {sum(results.outcomes.values())} in {elapsed:.1f} s; outcomes: {dict(results.outcomes)}"
        + (f"; errors: {dict(results.errors)}" if results.errors else "")
    )
    print(
        f"latency StartSaga→terminal: p50 {results.percentile(0.5) * 1000:.1f} ms, "
        f"p95 {results.percentile(0.95) * 1000:.1f} ms, p99 {results.percentile(0.99) * 1000:.1f} ms"
        + (f", mean {statistics.mean(results.latencies) * 1000:.1f} ms" if results.latencies else "")
    )
    print(
        "cpu seconds: "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in used.items())
        + f" (over {elapsed:.1f} s wall on {os.cpu_count()} cores)"
    )
    if results.completed:
        print(f"cpu per completed saga: {1000 * sum(used.values()) / results.completed:.1f} ms")
    ratio = results.throughput * RPCS_PER_SAGA / calls
    print(
        f"efficiency: {results.throughput:.1f} sagas/s × {RPCS_PER_SAGA} RPCs ÷ {calls:,.0f} baseline calls/s = {ratio:.2f}"
    )
    print(f"throughput: {results.throughput:.1f} sagas/s")
    return 0 if not results.errors else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sagas", type=int, default=2000, help="sagas to run (ignored with --duration)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=0, help="run for this many seconds instead")
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL URL (default: an embedded server in a temporary directory)"
    )
    parser.add_argument("--warehouses", type=int, default=10)
    parser.add_argument("--skus", type=int, default=60)
    parser.add_argument("--lines", type=int, default=1, help="lines per order")
    parser.add_argument(
        "--watchers", type=int, default=0, help="instead of load: this many concurrent WatchSaga streams"
    )
    parser.add_argument(
        "--all-events",
        action="store_true",
        help="each saga's WatchSaga streams every event (default: only the terminal one)",
    )
    parser.add_argument("--hot-skus", type=int, default=0, help="draw every line from this many SKUs (contention)")
    from invsaga.bench_list import add_arguments as list_arguments
    from invsaga.bench_resources import add_arguments as resource_arguments

    resource_arguments(parser)
    list_arguments(parser)
