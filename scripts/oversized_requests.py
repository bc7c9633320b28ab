"""Memory of the coordinator under oversized StartSagas (issue 21): refused, and nothing held.

Starts a coordinator on a fresh database, then sends ``--calls`` concurrent StartSagas of
``--mb`` MB each (7 MB by default: over the 1 MiB StartSaga limit, under gRPC's old 8 MiB) and
reports what they were answered, and the coordinator's RSS: idle, the peak while they arrive
(VmHWM, the kernel's high-water mark, and a 5 ms sampler), and a while after.

    .venv/bin/python scripts/oversized_requests.py [--calls 40] [--mb 7] [--rounds 3]
        [--in-metadata] [--env INVSAGA_MAX_START_SAGA_BYTES=8MiB ...]

``--in-metadata`` carries the bulk in ``metadata`` (valid but for its size) instead of an
item's description; ``--env`` sets the coordinator's environment (e.g. the old limits back,
to compare).

Not a test: figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from invsaga.coordinator.v1 import coordinator_pb2 as pb  # noqa: E402
from invsaga.coordinator.v1 import coordinator_pb2_grpc as pb_grpc  # noqa: E402
from tests.saga_support import order  # noqa: E402
from tests.support import close_test_postgres, start_mesh  # noqa: E402


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


async def round_of(stub, calls: int, size: int, pid: int, in_metadata: bool) -> tuple[collections.Counter, int, float]:
    request = pb.StartSagaRequest(request=order({"SKU-1": 1}))
    if in_metadata:
        for i in range(size // 4000):
            request.request.metadata[f"note_{i:05d}"] = "m" * 4000
    else:
        request.request.items[0].description = "x" * size
    peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            await asyncio.sleep(0.005)

    sampler = asyncio.ensure_future(sample())
    started = time.perf_counter()
    results = await asyncio.gather(*(stub.StartSaga(request, timeout=60) for _ in range(calls)), return_exceptions=True)
    elapsed = time.perf_counter() - started
    done.set()
    await sampler
    codes = collections.Counter(r.code().name if isinstance(r, grpc.aio.AioRpcError) else "OK" for r in results)
    return codes, peak, elapsed


async def main(args: argparse.Namespace) -> None:
    env = dict(item.split("=", 1) for item in args.env)
    mesh = start_mesh(Path(tempfile.mkdtemp(prefix="oversize-")), services=["coordinator"], env=env)
    pid = mesh.procs["coordinator"].pid
    try:
        options = [("grpc.max_send_message_length", -1)]
        async with grpc.aio.insecure_channel(mesh.address("coordinator"), options=options) as channel:
            stub = pb_grpc.SagaCoordinatorServiceStub(channel)
            for _ in range(20):
                await stub.ListSagas(pb.ListSagasRequest(), timeout=10)
            await asyncio.sleep(1)
            idle = rss_kib(pid)
            print(f"coordinator idle RSS: {idle / 1024:.0f} MiB")
            for n in range(args.rounds):
                reset_peak(pid)
                codes, sampled, elapsed = await round_of(
                    stub, args.calls, int(args.mb * 1000 * 1000), pid, args.in_metadata
                )
                hwm = rss_kib(pid, "VmHWM")
                await asyncio.sleep(2)
                after = rss_kib(pid)
                print(
                    f"round {n + 1}: {args.calls} x {args.mb} MB StartSaga -> {dict(codes)} in {elapsed:.2f}s; "
                    f"RSS peak {max(hwm, sampled) / 1024:.0f} MiB (VmHWM {hwm / 1024:.0f}, sampled {sampled / 1024:.0f}), "
                    f"2 s after {after / 1024:.0f} MiB"
                )
            reply = await stub.ListSagas(pb.ListSagasRequest(), timeout=10)
            print(f"sagas stored: {len(reply.sagas)}")
    finally:
        mesh.stop()
        close_test_postgres()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--mb", type=float, default=7.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-metadata", action="store_true")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    asyncio.run(main(parser.parse_args()))
