"""``invsaga bench --list``: how fast ListSagas finds an order's sagas among many.

It starts a mesh (on a fresh database of ``--database-url``, or an embedded server), runs
``--list-sagas`` one-line sagas through it (each with its own order id; a hundred customers
share them), then times ``--list-calls`` ListSagas calls of each kind over gRPC, one after
another: by order_id, by customer_id, by a one-minute creation-time window, and by reservation
state. A measurement, recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc

CUSTOMERS = 100


def _order(k: int) -> pb.InventoryRequest:
    from invsaga.bench import order

    request = order(random.Random(k), 1, 60, 0)
    request.order_id = f"ORD-{k:06d}"
    request.customer_id = f"CUST-{k % CUSTOMERS:03d}"
    return request


def _percentiles(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return f"p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms, p99 {q[98]:.1f} ms, max {ms[-1]:.1f} ms"


async def list_bench(args: argparse.Namespace) -> int:
    from invsaga.bench import bench_env, bench_seed, seed_mesh
    from invsaga.bench_resources import _run_sagas, mesh_on_fresh_database

    with mesh_on_fresh_database(args, "list", bench_env(args, extra=False)) as mesh:
        await seed_mesh(mesh, bench_seed(10, 60))
        address = mesh.address("coordinator")
        codes: Counter = Counter()
        began = time.time()
        took = await _run_sagas(address, _order, args.list_sagas, args.concurrency, codes)
        print(f"{args.list_sagas:,} sagas in {took:.1f} s: {dict(codes)}", flush=True)
        return await _time_lists(address, args, began)


async def _time_lists(address: str, args: argparse.Namespace, began: float) -> int:
    rng = random.Random(5)
    window = Timestamp(seconds=int(began) + 5)
    window_end = Timestamp(seconds=int(began) + 65)
    kinds = {
        "order_id": lambda: pb.ListSagasRequest(order_id=f"ORD-{rng.randrange(args.list_sagas):06d}"),
        "customer_id (first page of 50)": lambda: pb.ListSagasRequest(
            customer_id=f"CUST-{rng.randrange(CUSTOMERS):03d}", page_size=50
        ),
        "a one-minute window (first page of 50)": lambda: pb.ListSagasRequest(
            created_after=window, created_before=window_end, page_size=50
        ),
        "reservation RESERVED (first page of 50)": lambda: pb.ListSagasRequest(
            reservation_state=common_pb2.RESERVATION_STATE_RESERVED, page_size=50
        ),
    }
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)
        for name, make in kinds.items():
            for _ in range(20):  # warm-up
                await stub.ListSagas(make(), timeout=30)
            seconds, found = [], 0
            for _ in range(args.list_calls):
                request = make()
                started = time.perf_counter()
                reply = await stub.ListSagas(request, timeout=30)
                seconds.append(time.perf_counter() - started)
                found += len(reply.sagas)
            print(
                f"ListSagas by {name}: {_percentiles(seconds)} ({found / args.list_calls:.1f} sagas per answer, "
                f"{args.list_calls} calls)",
                flush=True,
            )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", action="store_true", help="time ListSagas' filters among --list-sagas sagas")
    parser.add_argument("--list-sagas", type=int, default=10_000, help="with --list: sagas to create first")
    parser.add_argument("--list-calls", type=int, default=500, help="with --list: calls timed per filter")
