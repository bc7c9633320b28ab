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
