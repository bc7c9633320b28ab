from __future__ import annotations

import pytest

from tests.support import close_test_postgres, start_mesh

# `make test` runs the modules in parallel workers, a module to a worker (`-n 3 --dist loadfile`;
# most of these tests wait on processes, so three workers overlap well on two cores; a fourth
# gained nothing here). Workers take modules in collection order, so the longest start first and
# no long one is left for the end.
LONGEST_FIRST = (
    "test_lifecycle",
    "test_recovery",
    "test_demo",
    "test_chaos",
    "test_cli_commands",
    "test_blips",
    "test_saga",
    "test_up",
    "test_transfer_load",
    "test_client",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: the rest keep their order


@pytest.fixture
def mesh_factory(tmp_path_factory):
    """Start real meshes, each on a database of its own; all are stopped when the test ends."""
    meshes = []

    def make(**kwargs):
        mesh = start_mesh(tmp_path_factory.mktemp("mesh"), **kwargs)
        meshes.append(mesh)
        return mesh

    yield make
    for mesh in meshes:
        mesh.stop()


def pytest_sessionfinish(session, exitstatus):
    close_test_postgres()
