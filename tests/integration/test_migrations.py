"""Each service's Alembic history, run on an empty schema, builds exactly the tables of its models.py."""

from __future__ import annotations

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from invsaga.runtime.config import SERVICES
from invsaga.runtime.db import create_engine, migrate, migrations_of
from tests.support import new_pg_database


def models_of(service: str):
    return importlib.import_module("coordinator.models" if service == "coordinator" else f"services.{service}.models")


@pytest.fixture(scope="module")
def database_url() -> str:
    return new_pg_database()


@pytest.mark.parametrize("service", SERVICES)
async def test_the_migrations_build_the_schema_of_the_models(service, database_url):
    models = models_of(service)
    scripts = migrations_of(models.__file__)
    cfg = Config()
    cfg.set_main_option("script_location", scripts)
    assert len(ScriptDirectory.from_config(cfg).get_heads()) == 1, "one history, one head"

    await migrate(database_url, service, scripts, models.metadata)
    await migrate(database_url, service, scripts, models.metadata)  # at head already: nothing to do
    engine = create_engine(database_url, service, pool_size=1)
    try:
        async with engine.connect() as conn:
            drift = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), models.metadata)
            )
    finally:
        await engine.dispose()
    assert drift == [], f"the migrations of {service} and its models.py disagree"


async def test_0008_keeps_the_status_in_its_column_and_a_pending_resume_or_cancel_in_claimed_from():
    """Before 0008 a saga's state held its status too; a cancel or resume showed as the difference."""
    from alembic import command
    from sqlalchemy import text

    from coordinator import models
    from invsaga.coordinator.v1 import coordinator_pb2 as pb
    from invsaga.runtime.db import _alembic_config

    url = new_pg_database()
    scripts = migrations_of(models.__file__)
    engine = create_engine(url, "coordinator", pool_size=1)
    rows = {  # saga_id: (status column, status in the state)
        "resumed": (pb.SAGA_STATUS_COMPENSATING, pb.SAGA_STATUS_FAILED),
        "cancelled": (pb.SAGA_STATUS_COMPENSATING, pb.SAGA_STATUS_COMPLETED),
        "running": (pb.SAGA_STATUS_COMPENSATING, pb.SAGA_STATUS_COMPENSATING),
        "done": (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPLETED),
    }
    try:
        async with engine.begin() as conn:
            await conn.execute(text('CREATE SCHEMA IF NOT EXISTS "coordinator"'))
            await conn.run_sync(lambda sync: command.upgrade(_alembic_config(scripts, sync, models.metadata), "0007"))
            for saga_id, (column, inside) in rows.items():
                state = pb.Saga(saga_id=saga_id, status=inside, request_id=f"r-{saga_id}").SerializeToString()
                await conn.execute(
                    text(
                        "INSERT INTO sagas (saga_id, request_id, request_hash, status, priority, is_urgent, state,"
                        " last_seq, cancel_requested, deadline, trace_context, created_at, updated_at)"
                        " VALUES (:id, :rid, '', :status, 0, false, :state, 1, false, 0, '', 0, 0)"
                    ),
                    {"id": saga_id, "rid": f"r-{saga_id}", "status": column, "state": state},
                )
        await migrate(url, "coordinator", scripts, models.metadata)
        async with engine.connect() as conn:
            found = {
                r.saga_id: (r.status, pb.Saga.FromString(r.state).status, r.claimed_from)
                for r in await conn.execute(text("SELECT saga_id, status, state, claimed_from FROM sagas"))
            }
    finally:
        await engine.dispose()
    assert found == {
        "resumed": (pb.SAGA_STATUS_COMPENSATING, 0, pb.SAGA_STATUS_FAILED),
        "cancelled": (pb.SAGA_STATUS_COMPENSATING, 0, pb.SAGA_STATUS_COMPLETED),
        "running": (pb.SAGA_STATUS_COMPENSATING, 0, 0),
        "done": (pb.SAGA_STATUS_COMPLETED, 0, 0),
    }
