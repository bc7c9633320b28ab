"""Helpers shared by the integration tests: real processes on random ports, real databases."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Mapping, Sequence

import pytest

from invsaga.launcher import Mesh, random_ports
from invsaga.runtime.config import METRICS_PORT_OFFSET, SERVICES
from tests.preloaded import PreloadedMesh

MACHINE_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The suite's meshes fork their processes from one preloaded parent (tests/preloaded.py): a mesh
# starts in about a third of the CPU. INVSAGA_TEST_LAUNCH=exec starts each as ``python -m
# <service>`` instead, as ``invsaga up`` does (test_up and test_demo run it so in any case).
SuiteMesh = Mesh if os.environ.get("INVSAGA_TEST_LAUNCH") == "exec" else PreloadedMesh


def _reachable(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


class _TestPostgres:
    """The server the suite creates its databases on, chosen once per session.

    ``INVSAGA_TEST_PG_URL`` if set (``embedded``: the embedded server, as on a machine without
    one); else the machine's server on 127.0.0.1:5432 (under CI a missing one is a failure);
    else, off CI, an embedded server of the session's own. Under ``make test`` each worker
    process is a session, so each has its own embedded server.
    """

    def __init__(self) -> None:
        self.admin_url: str | None = None
        self.embedded = None
        self.created: list[str] = []
        self._tmp: str | None = None

    def url(self) -> str:
        if self.admin_url is not None:
            return self.admin_url
        given = os.environ.get("INVSAGA_TEST_PG_URL", "")
        if given and given != "embedded":
            self.admin_url = given
        elif not given and _reachable(MACHINE_PG_URL):
            self.admin_url = MACHINE_PG_URL
        elif IN_CI and not given:
            pytest.fail(f"PostgreSQL is not reachable at {MACHINE_PG_URL} (CI requires it)")
        else:
            import tempfile

            from invsaga.runtime.embedded import EmbeddedPostgres

            self._tmp = tempfile.mkdtemp(prefix="invsaga-test-pg-")
            self.embedded = EmbeddedPostgres(Path(self._tmp) / "postgres")
            self.admin_url = self.embedded.start().replace("postgresql+psycopg://", "postgresql://", 1)
        return self.admin_url

    def new_database(self) -> str:
        import psycopg

        admin = self.url()
        name = f"invsaga_t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return _with_database(admin, name).replace("postgresql://", "postgresql+psycopg://", 1)

    def close(self) -> None:
        import psycopg

        if self.created and self.admin_url is not None:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                for name in self.created:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None
            import shutil

            shutil.rmtree(self._tmp or "", ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` (the path part; a socket's ``?host=`` query stays)."""
    head, _, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


TEST_POSTGRES = _TestPostgres()


def test_admin_url() -> str:
    """The admin URL (libpq form) of the suite's PostgreSQL server."""
    return TEST_POSTGRES.url()


def new_pg_database() -> str:
    """A fresh, empty database; returns its SQLAlchemy URL."""
    return TEST_POSTGRES.new_database()


def close_test_postgres() -> None:
    TEST_POSTGRES.close()


def start_mesh(
    workdir: Path,
    *,
    services: Sequence[str] = SERVICES,
    env: Mapping[str, str] | None = None,
    database_url: str | None = None,
) -> Mesh:
    if database_url is None:
        database_url = new_pg_database()
    mesh = SuiteMesh(
        ports=random_ports(),
        database_url=database_url,
        data_dir=str(workdir / "data"),
        env={"INVSAGA_LOG_LEVEL": "WARNING", **(env or {})},
        services=services,
        log_dir=str(workdir / "logs"),
    )
    return mesh.start()


def metric_total(mesh: Mesh, service: str, sample: str) -> float:
    """The sum of a Prometheus sample (e.g. ``invsaga_expired_allocations_total``) on a process's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    port = int(mesh.address(service).rsplit(":", 1)[1])
    body = httpx.get(f"http://127.0.0.1:{port + METRICS_PORT_OFFSET}/metrics", timeout=5).text
    return sum(s.value for family in text_string_to_metric_families(body) for s in family.samples if s.name == sample)


def logs_tail(mesh: Mesh, lines: int = 40) -> str:
    out = []
    for log in sorted(Path(mesh.log_dir or ".").glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(out)


def proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from the state on (field 3), None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
