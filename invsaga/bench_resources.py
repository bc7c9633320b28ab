"""``invsaga bench --connections`` and ``invsaga bench --memory``: what a mesh holds, not how fast it goes.

``--connections`` starts one mesh (``--meshes N``: N at once, each on its own database of the
same server), runs ``--sagas`` sagas through each, and counts the PostgreSQL connections each
process holds: the most at once during the load, right after it, and every few seconds of
``--idle`` seconds at rest, when the pools should have closed what they no longer use.

``--memory`` starts one mesh and follows the coordinator's resident memory (RSS): at rest after
a warm-up (its idle level), during ``--sagas`` sagas of ``--lines``-line orders of SKUs no
warehouse holds (each fails at CheckAvailability with a shortage on every line) while rounds of
``--big`` concurrent StartSagas of ``--big-bytes`` each arrive beside them, and ``--settle``
seconds after the load.

Both need nothing but a mesh: they are measurements, recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterator

import grpc
import psycopg
from sqlalchemy.engine import make_url

from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from invsaga.bench import OUTCOME_EVENTS, bench_env, bench_seed, order, seed_mesh, start_mesh
from invsaga.launcher import Mesh
from invsaga.runtime.db import conninfo


# --- measuring ---------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


_SS_PID = re.compile(r"pid=(\d+)")


def connections_by_pid(port: int) -> dict[int, int]:
    """Established TCP connections to ``port`` (PostgreSQL's): client port → client process."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( dport = :{port} )"], capture_output=True, text=True, check=False
    ).stdout
    found = {}
    for line in out.splitlines():
        fields = line.split()
        pids = _SS_PID.findall(line)
        if len(fields) >= 3 and pids:
            found[int(fields[2].rsplit(":", 1)[1])] = int(pids[0])
    return found


def max_connections(url: str) -> int:
    """The server's max_connections."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        most = conn.execute("SHOW max_connections").fetchone()
    assert most is not None  # a SHOW: one row
    return int(most[0])


def fresh_database(url: str, label: str) -> str:
    """A new, empty database on the server of ``url``; its URL."""
    name = f"invsaga_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return str(_url_with_database(url, name))


def drop_database(url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(conninfo(str(_url_with_database(url, "postgres"))), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _url_with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def mesh_on_fresh_database(args: argparse.Namespace, label: str, env: dict[str, str]) -> Iterator[Mesh]:
    """A started mesh on a fresh database of ``--database-url`` (or an embedded server), stopped
    and its database dropped at the end."""
    url = fresh_database(args.database_url, label) if args.database_url else None
    try:
        with tempfile.TemporaryDirectory(prefix=f"invsaga-{label}-") as workdir:
            mesh = start_mesh(workdir, "mesh", url, env)
            try:
                yield mesh
            finally:
                mesh.stop()
    finally:
        if url:
            drop_database(url)


async def _run_sagas(address: str, make, count: int, concurrency: int, codes: Counter) -> float:
    """Start ``count`` sagas from ``make(k)`` at ``concurrency`` and follow each to its end; seconds taken."""
    remaining = iter(range(count))
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 16 << 20)]) for _ in range(4)
    ]
    stubs = [pb_grpc.SagaCoordinatorServiceStub(ch) for ch in channels]

    async def worker(w: int) -> None:
        stub = stubs[w % len(stubs)]
        for k in remaining:
            try:
                reply = await stub.StartSaga(pb.StartSagaRequest(request=make(k)), timeout=120)
                status = reply.saga.status
                async for item in stub.WatchSaga(
                    pb.WatchSagaRequest(saga_id=reply.saga_id, event_types=OUTCOME_EVENTS), timeout=600
                ):
                    status = item.event.status
                codes[pb.SagaStatus.Name(status).removeprefix("SAGA_STATUS_")] += 1
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    finally:
        for channel in channels:
            await channel.close()
    return time.monotonic() - started


def _one_line(rng: random.Random):
    return lambda k: order(rng, 1, 60, 0)


# --- --connections -----------------------------------------------------------------------------


async def connections(args: argparse.Namespace) -> int:
    if not args.database_url:
        print(
            "--connections counts TCP connections: give --database-url of a PostgreSQL server "
            "(a fresh database is created on it for each mesh and dropped afterwards)"
        )
        return 2
    port = make_url(args.database_url).port or 5432
    urls = [fresh_database(args.database_url, f"conns{i}") for i in range(args.meshes)]
    env = bench_env(args, extra=False)
    meshes: list[Mesh] = []
    services: list[str] = []
    failures = 0
    try:
        with tempfile.TemporaryDirectory(prefix="invsaga-conns-") as workdir:
            try:
                for i, url in enumerate(urls):
                    print(f"starting mesh {i + 1} of {args.meshes} on its own database ...", flush=True)
                    meshes.append(start_mesh(workdir, f"mesh{i}", url, env))
                for mesh in meshes:
                    await seed_mesh(mesh, bench_seed(10, 60))
                owners = {proc.pid: (i, name) for i, mesh in enumerate(meshes) for name, proc in mesh.procs.items()}
                services = list(meshes[0].procs)

                def count() -> dict[tuple[int, str], int]:
                    found = Counter(connections_by_pid(port).values())
                    return {owner: found.get(pid, 0) for pid, owner in owners.items()}

                before = count()
                peak: Counter = Counter()
                busiest: Counter = Counter()
                peak_total = peak_server = 0
                done = asyncio.Event()

                async def sample() -> None:
                    nonlocal peak_total, peak_server
                    with psycopg.connect(conninfo(args.database_url), autocommit=True) as conn:
                        while not done.is_set():
                            clients = connections_by_pid(port)
                            now = Counter(owners[pid] for pid in clients.values() if pid in owners)
                            rows = conn.execute(
                                "SELECT client_port, state FROM pg_stat_activity "
                                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                            ).fetchall()
                            busy = Counter(
                                owners[clients[p]] for p, state in rows if state != "idle" and clients.get(p) in owners
                            )
                            for owner in owners.values():
                                peak[owner] = max(peak[owner], now[owner])
                                busiest[owner] = max(busiest[owner], busy[owner])
                            peak_total = max(peak_total, sum(now.values()))
                            peak_server = max(peak_server, len(rows))
                            await asyncio.sleep(0.1)

                sampler = asyncio.create_task(sample())
                codes: Counter = Counter()
                print(
                    f"running {args.sagas} one-line sagas through each mesh at concurrency {args.concurrency} ...",
                    flush=True,
                )
                rng = random.Random(3)
                took = await asyncio.gather(
                    *(
                        _run_sagas(mesh.address("coordinator"), _one_line(rng), args.sagas, args.concurrency, codes)
                        for mesh in meshes
                    )
                )
                done.set()
                await sampler
                after = count()
                print(f"sagas: {dict(codes)} in {max(took):.1f} s")
                timeline = [(0.0, after)]
                began = time.monotonic()
                while time.monotonic() - began < args.idle:
                    await asyncio.sleep(min(5.0, args.idle))
                    timeline.append((time.monotonic() - began, count()))
                failures = sum(n for code, n in codes.items() if code not in ("COMPLETED",))
            finally:
                for mesh in meshes:
                    mesh.stop()
    finally:
        for url in urls:
            drop_database(url)
    most_connections = max_connections(args.database_url)
    print("\nPostgreSQL connections per process (most of the meshes when several):")
    print(f"| when | {' | '.join(services)} | mesh total |")
    print(f"|---|{'---|' * len(services)}---|")

    def row(label: str, counts) -> str:
        per = [max(counts.get((i, s), 0) for i in range(len(meshes))) for s in services]
        total = max(sum(counts.get((i, s), 0) for s in services) for i in range(len(meshes)))
        return f"| {label} | {' | '.join(map(str, per))} | {total} |"

    print(row("before the load (after start and seeding)", before))
    print(row("most open at once during the load", peak))
    print(row("most busy at once during the load (in a statement or transaction)", busiest))
    print(row("right after the load", after))
    for at, counts in timeline[1:]:
        print(row(f"{at:.0f} s at rest", counts))
    print(
        f"\nmost connections of all {len(meshes)} mesh(es) at once: {peak_total}; "
        f"most client connections on the server at once (everyone's): {peak_server} of max_connections {most_connections}"
    )
    return 1 if failures else 0


# --- --memory ----------------------------------------------------------------------------------


def _failing_order(rng: random.Random, lines: int):
    """An order of ``lines`` made-up 250-character SKUs: every line is short, the saga fails."""

    def make(k: int) -> pb.InventoryRequest:
        tag = uuid.uuid4().hex
        return pb.InventoryRequest(
            request_id=tag,
            order_id=f"MEM-{tag[:12]}",
            customer_id=f"C-{k}",
            items=[
                common_pb2.Item(sku=f"NOSUCH-{tag[:8]}-{i:04d}-".ljust(250, "x"), product_id=f"P-{i}", quantity=1)
                for i in range(lines)
            ],
            allocation_strategy=common_pb2.ALLOCATION_STRATEGY_PRIORITY,
            priority=rng.randint(1, 10),
        )

    return make


def big_request(size: int, k: int) -> pb.StartSagaRequest:
    """A valid StartSaga of ``size`` bytes (up to about 1 MiB): 1,000 lines of made-up SKUs, each
    text field near its 256-character bound, padded to the byte with metadata. It fails at
    CheckAvailability like the others."""
    tag = uuid.uuid4().hex
    request = pb.InventoryRequest(
        request_id=tag,
        order_id=f"BIG-{tag[:12]}",
        customer_id=f"C-big-{k}",
        items=[
            common_pb2.Item(
                sku=f"NOSUCH-{tag[:8]}-{i:04d}-".ljust(250, "s"),
                product_id=f"P-{i}-".ljust(250, "p"),
                unit="u" * 250,
                description=f"line {i} ".ljust(250, "d"),
                quantity=1,
            )
            for i in range(1000)
        ],
        allocation_strategy=common_pb2.ALLOCATION_STRATEGY_PRIORITY,
    )
    message = pb.StartSagaRequest(request=request)
    message.request.metadata["padding"] = ""
    length = size - message.ByteSize()
    for _ in range(3):  # the length prefixes grow with the padding
        message.request.metadata["padding"] = "p" * max(0, length)
        length -= message.ByteSize() - size
    return message


async def _big_rounds(address: str, args: argparse.Namespace, stop: asyncio.Event, codes: Counter) -> int:
    """Rounds of ``args.big`` concurrent StartSagas of ``args.big_bytes``, every two seconds until ``stop``."""
    rounds = 0
    options = [("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = pb_grpc.SagaCoordinatorServiceStub(channel)

        async def one(k: int) -> None:
            try:
                await stub.StartSaga(big_request(args.big_bytes, k), timeout=120)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1

        while not stop.is_set() and rounds < args.big_rounds:
            await asyncio.gather(*(one(rounds * args.big + k) for k in range(args.big)))
            rounds += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
    return rounds


async def memory(args: argparse.Namespace) -> int:
    with mesh_on_fresh_database(args, "memory", bench_env(args)) as mesh:
        return await _memory_run(mesh, args)


async def _memory_run(mesh: Mesh, args: argparse.Namespace) -> int:
    pid = mesh.procs["coordinator"].pid
    address = mesh.address("coordinator")
    print(await seed_mesh(mesh, bench_seed(10, 60)), flush=True)
    print(f"coordinator RSS after start: {rss_bytes(pid) / 2**20:.0f} MiB", flush=True)
    warm: Counter = Counter()
    rng = random.Random(17)
    await _run_sagas(address, _one_line(rng), 100, 16, warm)
    await _run_sagas(address, _failing_order(rng, 10), 20, 4, warm)
    await asyncio.sleep(args.settle_idle)
    idle = rss_bytes(pid)
    print(
        f"warm-up: {dict(warm)}; coordinator RSS at rest after it (the idle level): {idle / 2**20:.0f} MiB", flush=True
    )

    peak = idle
    samples: list[tuple[float, int]] = []
    done = asyncio.Event()
    began = time.monotonic()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            now = rss_bytes(pid)
            peak = max(peak, now)
            samples.append((time.monotonic() - began, now))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    codes: Counter = Counter()
    big_codes: Counter = Counter()
    stop_big = asyncio.Event()
    print(
        f"running {args.sagas} sagas of {args.lines}-line orders that fail at concurrency {args.concurrency}, "
        f"with rounds of {args.big} concurrent {args.big_bytes:,}-byte StartSagas beside them ...",
        flush=True,
    )
    big = asyncio.create_task(_big_rounds(address, args, stop_big, big_codes))
    took = await _run_sagas(address, _failing_order(random.Random(5), args.lines), args.sagas, args.concurrency, codes)
    stop_big.set()
    rounds = await big
    done.set()
    await sampler
    end = rss_bytes(pid)
    print(f"failing sagas: {dict(codes)} in {took:.1f} s; big StartSagas: {rounds} round(s), {dict(big_codes)}")
    print(
        f"coordinator RSS: idle {idle / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, "
        f"at the end of the load {end / 2**20:.0f} MiB",
        flush=True,
    )
    settled = []
    waited = time.monotonic()
    while time.monotonic() - waited < args.settle:
        await asyncio.sleep(5.0)
        settled.append((time.monotonic() - waited, rss_bytes(pid)))
    final = settled[-1][1] if settled else end
    print("at rest after the load: " + ", ".join(f"{at:.0f} s {rss / 2**20:.0f} MiB" for at, rss in settled))
    over = final / idle - 1
    print(
        f"coordinator RSS {args.settle:.0f} s after the load: {final / 2**20:.0f} MiB, "
        f"{over * 100:+.0f} % of the idle level; peak {peak / 2**20:.0f} MiB "
        f"(targets: peak < {args.peak_mib} MiB, after ≤ +20 %)"
    )
    ok = peak < args.peak_mib * 2**20 and over <= 0.20
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connections",
        action="store_true",
        help="count each process's PostgreSQL connections during and after --sagas sagas",
    )
    parser.add_argument("--meshes", type=int, default=1, help="with --connections: this many meshes at once")
    parser.add_argument(
        "--idle",
        type=float,
        default=90.0,
        help="with --connections: seconds at rest after the load, counting every 5 s",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="follow the coordinator's RSS through --sagas failing --lines-line sagas and big StartSagas",
    )
    parser.add_argument("--big", type=int, default=40, help="with --memory: concurrent big StartSagas per round")
    parser.add_argument("--big-bytes", type=int, default=1 << 20, help="with --memory: size of each big StartSaga")
    parser.add_argument("--big-rounds", type=int, default=5, help="with --memory: rounds of big StartSagas (every 2 s)")
    parser.add_argument("--settle", type=float, default=60.0, help="with --memory: seconds at rest after the load")
    parser.add_argument(
        "--settle-idle", type=float, default=10.0, help="with --memory: seconds at rest before the idle level"
    )
    parser.add_argument("--peak-mib", type=int, default=300, help="with --memory: the peak RSS target")
    parser.add_argument(
        "--coordinator-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of every process of the mesh (repeatable)",
    )
