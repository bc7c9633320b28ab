"""`invsaga up` stops everything it started at SIGTERM, SIGINT or SIGHUP, whenever the signal
comes (starting the embedded PostgreSQL, starting the processes, seeding, serving), and starts
a crashed process again.

tests/integration/test_demo.py covers the demo data, its seeding into an empty database only,
and Ctrl-C once everything serves. Each run here has its own data directory, hence its own
embedded PostgreSQL, and ports picked by ``--random-ports``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from invsaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from invsaga.launcher import wait_serving
from invsaga.up import RESTART_CAP, STABLE_AFTER, restart_delay
from tests.support import proc_stat

INVSAGA = str(Path(sys.executable).parent / "invsaga")
READY = "Ctrl-C stops all six processes"


# A process is its pid and its start time: pids are reused (pid_max may be 32768), start times not.
Process = tuple[int, int]


def _alive(process: Process) -> bool:
    stat = proc_stat(process[0])
    return stat is not None and stat[0] not in ("Z", "X") and int(stat[19]) == process[1]


def _processes_of(data: Path) -> dict[Process, set[int]]:
    """Process -> ports of every process of the run in ``data``: its six (their INVSAGA_DATA_DIR),
    its PostgreSQL server (the data directory on its command line) and that server's backends."""
    marker = f"INVSAGA_DATA_DIR={data}".encode()
    pgdata = str(data / "postgres").encode()
    found: dict[Process, set[int]] = {}
    servers: set[int] = set()
    stats: dict[int, list[str]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        stat = proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            continue
        stats[pid] = stat
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"postgres") and pgdata in b" ".join(argv):
                found[(pid, int(stat[19]))] = set()
                servers.add(pid)
                continue
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in env:
            ports = {int(e.split(b"=", 1)[1]) for e in env if e.startswith(b"INVSAGA_PORT=")}
            found[(pid, int(stat[19]))] = ports | {port + 1000 for port in ports}
    for pid, stat in stats.items():  # PostgreSQL backends: children of its server
        if int(stat[1]) in servers:
            found.setdefault((pid, int(stat[19])), set())
    return found


def _listening(ports: set[int]) -> set[int]:
    """Which of ``ports`` some socket listens on (a port merely bound as a connection's local
    end, as any freed port may soon be, does not count)."""
    busy = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if fields[3] == "0A" and port in ports:
                    busy.add(port)
    return busy


class Run:
    """``invsaga up --random-ports`` on its own data directory, its output and the processes
    (and ports) it has had, sampled while it runs."""

    def __init__(self, root: Path, name: str, *extra: str) -> None:
        self.data = root / name
        self.lines: list[str] = []
        self.seen: dict[Process, set[int]] = {}
        self.proc = subprocess.Popen(
            [INVSAGA, "up", "--random-ports", "--data-dir", str(self.data), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={"PATH": "/usr/bin:/bin", "INVSAGA_LOG_LEVEL": "WARNING", "HOME": str(root)},
        )
        self.threads = [threading.Thread(target=self._read, daemon=True), threading.Thread(target=self._sample)]
        for thread in self.threads:
            thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def _sample(self) -> None:
        while self.proc.poll() is None:
            for process, ports in _processes_of(self.data).items():
                self.seen.setdefault(process, set()).update(ports)
            time.sleep(0.2)

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            assert self.proc.poll() is None, f"invsaga up exited ({self.proc.returncode}) before {text!r}:\n{self.out}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout:.0f}s:\n{self.out}"
            time.sleep(0.1)

    def address(self, service: str) -> str:
        match = re.search(rf"^  {service} +grpc://(\S+)", self.out, re.MULTILINE)
        assert match, self.out
        return match.group(1)

    def signal_at(self, sig: int, after: float | str) -> None:
        """``sig`` ``after`` seconds after the first line (printed once the handlers are set: the
        start of a Python program takes seconds on a busy machine), or once the text ``after`` shows."""
        if isinstance(after, str):
            self.wait_for(after)
        else:
            self.wait_for("\n")
            time.sleep(after)
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 180.0) -> int:
        code = self.proc.wait(timeout=timeout)
        for thread in self.threads:
            thread.join(timeout=10)
        return code

    def assert_nothing_left(self) -> None:
        """No process of this run is left, by the pids seen and by a fresh look; the data
        directory's postmaster.pid names no living server; every port it used is free."""
        left = [process for process in self.seen if _alive(process)]
        assert not left, f"processes left behind: {left}\n{self.out}"
        assert not _processes_of(self.data), f"processes left behind: {_processes_of(self.data)}\n{self.out}"
        pidfile = self.data / "postgres" / "postmaster.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().split("\n", 1)[0])
            cmdline = Path(f"/proc/{pid}/cmdline")
            running = cmdline.exists() and str(self.data / "postgres").encode() in cmdline.read_bytes()
            assert not running, "postmaster.pid names a running server"
        busy = _listening({port for ports in self.seen.values() for port in ports})
        assert not busy, f"ports still listened on: {sorted(busy)}\n{self.out}"


def _stopped_cleanly(run: Run, sig: int) -> None:
    assert run.finish() == 0, run.out
    assert f"{signal.Signals(sig).name} received" in run.out, run.out
    run.assert_nothing_left()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Runs one after the other share the data directory "shared": the first initialises its
    PostgreSQL server, the later ones start it (another moment for a signal), and faster."""
    return tmp_path_factory.mktemp("up")


def test_a_signal_at_any_moment_of_the_start_stops_everything_started(data_root):
    """SIGTERM 1 s, 3 s and 10 s after the start (initdb, starting the embedded PostgreSQL or the
    processes), one run after the other; meanwhile another run gets SIGINT as it seeds."""
    seeding = Run(data_root, "seeding")
    runs = [seeding]
    try:
        sender = threading.Thread(target=seeding.signal_at, args=(signal.SIGINT, "demo data: seeding"))
        sender.start()
        for after in (1.0, 3.0, 10.0):
            run = Run(data_root, "shared")
            runs.append(run)
            run.signal_at(signal.SIGTERM, after)
            _stopped_cleanly(run, signal.SIGTERM)
        sender.join()
        _stopped_cleanly(seeding, signal.SIGINT)
    finally:
        for run in runs:
            if run.proc.poll() is None:
                run.proc.kill()


def test_a_crashed_process_is_started_again_and_sighup_stops_everything(data_root):
    run = Run(data_root, "shared", "--no-demo-data")
    try:
        run.wait_for(READY)
        inventory = run.address("inventory")
        [victim] = [
            process
            for process in _processes_of(run.data)
            if b"services.inventory" in Path(f"/proc/{process[0]}/cmdline").read_bytes()
        ]
        os.kill(victim[0], signal.SIGKILL)  # as the OOM killer would
        run.wait_for("invsaga up: inventory exited with status -9; restarting in 1s", timeout=30)
        run.wait_for("invsaga up: inventory started again", timeout=30)
        wait_serving(inventory, 120, service="inventory")
        with grpc.insecure_channel(inventory) as channel:  # it answers from its database again
            inventory_pb2_grpc.InventoryServiceStub(channel).ListStock(inventory_pb2.ListStockRequest(), timeout=30)
        assert not _alive(victim)
        run.proc.send_signal(signal.SIGHUP)
        _stopped_cleanly(run, signal.SIGHUP)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()


def test_restart_delays_double_up_to_the_cap_and_start_over_after_a_stable_run():
    delays, previous = [], None
    for _ in range(8):  # a process that exits at once, again and again
        previous = restart_delay(previous, up_for=0.5)
        delays.append(previous)
    assert delays == [1, 2, 4, 8, 16, RESTART_CAP, RESTART_CAP, RESTART_CAP]
    assert restart_delay(RESTART_CAP, up_for=STABLE_AFTER) == 1  # it had stayed up: start over


@pytest.fixture(autouse=True)
def _linux_only():
    if not Path("/proc/self/environ").exists():
        pytest.skip("the process checks read /proc")
