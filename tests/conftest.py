from __future__ import annotations

import pytest

from tests.support import drop_pg_databases, start_mesh

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def mesh_factory(backend, tmp_path_factory):
    """Start real meshes on the test's backend; all are stopped when the test ends."""
    meshes = []

    def make(**kwargs):
        mesh = start_mesh(backend, tmp_path_factory.mktemp(f"mesh-{backend}"), **kwargs)
        meshes.append(mesh)
        return mesh

    yield make
    for mesh in meshes:
        mesh.stop()


def pytest_sessionfinish(session, exitstatus):
    drop_pg_databases()
