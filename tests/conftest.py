from __future__ import annotations

import pytest

from tests.support import close_test_postgres, start_mesh


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
