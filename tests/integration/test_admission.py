"""Admission under saturation: urgent, then higher-priority sagas are driven first."""

from __future__ import annotations

import asyncio

from invsaga.coordinator.v1 import coordinator_pb2 as pb
from tests.saga_support import WH, MeshClient
from tests.support import start_mesh


async def test_urgent_and_higher_priority_sagas_are_admitted_first(tmp_path):
    mesh = start_mesh(
        tmp_path,
        env={
            "INVSAGA_MAX_CONCURRENT_SAGAS": "1",
            "INVSAGA_FAULTS": "kind=latency,delay=0.3,method=Execute,step=QUERY_WAREHOUSES",
        },
    )
    c = MeshClient(mesh)
    try:
        await c.seed([WH("WH-Q")], [("WH-Q", "SKU-Q", 1000)])
        low = [await c.start({"SKU-Q": 1}, priority=1) for _ in range(4)]
        high = await c.start({"SKU-Q": 1}, priority=10)
        urgent = await c.start({"SKU-Q": 1}, priority=2, is_urgent=True)
        sagas = await asyncio.gather(*(c.wait(s) for s in [*low, high, urgent]))
        assert {s.status for s in sagas} == {pb.SAGA_STATUS_COMPLETED}
        finished = sorted(sagas, key=lambda s: s.updated_at.ToNanoseconds())
        order = [s.saga_id for s in finished]
        # The first low-priority saga was already running; the urgent one goes next, then priority 10.
        assert order[:3] == [low[0], urgent, high], order
        assert order[3:] == low[1:]
    finally:
        await c.close()
        mesh.stop()
