"""The machine's CPU for starting and stopping meshes, exec'd against forked from a preloaded parent.

Starts ``--meshes`` six-process meshes one after the other, each on a fresh database (the test
suite's server: the machine's PostgreSQL or an embedded one), and stops each, first as
``invsaga up`` does (``python -m <service>``), then as the test suite does (tests/preloaded.py),
alternating for ``--rounds``. It reports the wall time and the machine's CPU (from /proc/stat,
so every process counts, PostgreSQL's included), which is why nothing else should run meanwhile.

    .venv/bin/python scripts/mesh_start_cpu.py [--meshes 5] [--rounds 2]

Not a test: figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invsaga.launcher import Mesh, random_ports  # noqa: E402
from tests.preloaded import PreloadedMesh  # noqa: E402
from tests.support import close_test_postgres, new_pg_database  # noqa: E402


def machine_cpu() -> float:
    """CPU seconds the machine has spent busy since boot (all but idle and iowait)."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def run(kind: type[Mesh], meshes: int) -> tuple[float, float]:
    cpu, wall = machine_cpu(), time.monotonic()
    for _ in range(meshes):
        work = Path(tempfile.mkdtemp(prefix="mesh-cpu-"))
        mesh = kind(ports=random_ports(), database_url=new_pg_database(), data_dir=str(work / "data"))
        mesh.start()
        codes = mesh.stop()
        assert set(codes.values()) == {0}, codes
    return time.monotonic() - wall, machine_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--meshes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    try:
        for round_ in range(1, args.rounds + 1):
            for label, kind in (("exec", Mesh), ("forked", PreloadedMesh)):
                wall, cpu = run(kind, args.meshes)
                print(
                    f"round {round_} {label:6}: {args.meshes} meshes in {wall:.1f} s wall, "
                    f"{cpu:.1f} s machine CPU ({cpu / args.meshes:.2f} s per mesh)",
                    flush=True,
                )
    finally:
        close_test_postgres()


if __name__ == "__main__":
    main()
