"""Ports picked for meshes started side by side never collide."""

from concurrent.futures import ThreadPoolExecutor

from invsaga.launcher import random_ports
from invsaga.runtime.config import METRICS_PORT_OFFSET


def test_meshes_picked_side_by_side_get_disjoint_ports_and_metrics_ports():
    with ThreadPoolExecutor(3) as pool:
        picks = list(pool.map(lambda _: random_ports(), range(3)))
    taken = [p for ports in picks for port in ports.values() for p in (port, port + METRICS_PORT_OFFSET)]
    assert len(taken) == len(set(taken)) == 3 * 6 * 2
