"""Helpers shared by the integration tests: real processes on random ports, real databases."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Mapping, Sequence

import pytest

from invsaga.launcher import Mesh, random_ports
from invsaga.runtime.config import SERVICES

PG_ADMIN_URL = os.environ.get("INVSAGA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def postgres_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def require_postgres() -> None:
    """Skip without PostgreSQL locally; under CI a missing database is a failure."""
    if postgres_available():
        return
    if IN_CI:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} (CI requires it)")
    pytest.skip("PostgreSQL is not reachable")


_created: list[str] = []


def new_pg_database() -> str:
    """A fresh, empty database; returns its SQLAlchemy URL."""
    import psycopg

    require_postgres()
    name = f"invsaga_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    _created.append(name)
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def drop_pg_databases() -> None:
    import psycopg

    if not _created:
        return
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for name in _created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _created.clear()


def start_mesh(
    backend: str,
    workdir: Path,
    *,
    services: Sequence[str] = SERVICES,
    env: Mapping[str, str] | None = None,
    database_url: str | None = None,
) -> Mesh:
    if backend == "postgres" and database_url is None:
        database_url = new_pg_database()
    mesh = Mesh(
        ports=random_ports(),
        database_url=database_url,
        data_dir=str(workdir / "data"),
        env={"INVSAGA_LOG_LEVEL": "WARNING", **(env or {})},
        services=services,
        log_dir=str(workdir / "logs"),
    )
    return mesh.start()


def logs_tail(mesh: Mesh, lines: int = 40) -> str:
    out = []
    for log in sorted(Path(mesh.log_dir or ".").glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(out)
