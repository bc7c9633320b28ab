from alembic import context

from invsaga.runtime.db import run_env

run_env(context)
