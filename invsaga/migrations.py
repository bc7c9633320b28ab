"""``invsaga migrate``: every service's schema to head, without starting the servers."""

from __future__ import annotations

import importlib
import os
from typing import Sequence

from invsaga.launcher import MODULES
from invsaga.runtime.config import load_settings
from invsaga.runtime.db import migrate, migrations_of


def models_module(service: str):
    return importlib.import_module(f"{MODULES[service]}.models")


async def migrate_all(database_url: str | None, services: Sequence[str], data_dir: str | None = None) -> None:
    """Migrate ``services`` on ``database_url`` (or the environment's, or the embedded server of the data dir)."""
    env = {**os.environ, "INVSAGA_DATA_DIR": data_dir} if data_dir else None
    embedded = None
    settings = load_settings(services[0], env=env, database_url=database_url)
    url = settings.database_url
    if not url:
        from invsaga.runtime.embedded import embedded_url

        url, embedded = embedded_url(settings.data_dir)
    try:
        for service in services:
            models = models_module(service)
            await migrate(url, service, migrations_of(models.__file__), models.metadata)
    finally:
        if embedded is not None:
            embedded.stop()
