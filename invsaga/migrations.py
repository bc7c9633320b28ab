"""``invsaga migrate``: every service's schema to head, without starting the servers."""

from __future__ import annotations

import importlib
from typing import Sequence

from invsaga.launcher import MODULES
from invsaga.runtime.config import load_settings
from invsaga.runtime.db import migrate


def models_module(service: str):
    return importlib.import_module(f"{MODULES[service]}.models")


async def migrate_all(database_url: str | None, services: Sequence[str], data_dir: str | None = None) -> None:
    from pathlib import Path

    env = None
    if data_dir:
        import os

        env = {**os.environ, "INVSAGA_DATA_DIR": data_dir}
    for service in services:
        settings = load_settings(service, env=env, database_url=database_url)
        models = models_module(service)
        await migrate(settings.database_url, service, str(Path(models.__file__).parent / "migrations"), models.metadata)
