"""Start the six processes as children, wait until each is SERVING, stop them together.

Used by ``invsaga up``/``demo``/``bench`` and by the integration tests, so that what the
tests exercise is exactly what an operator runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from invsaga.runtime.config import DEFAULT_PORTS, METRICS_PORT_OFFSET, SERVICES

MODULES: dict[str, str] = {
    "coordinator": "coordinator",
    **{name: f"services.{name}" for name in SERVICES if name != "coordinator"},
}
ROOT = Path(__file__).resolve().parents[1]


class LaunchError(RuntimeError):
    """A process did not come up; ``service`` names it when known."""

    def __init__(self, message: str, service: str | None = None) -> None:
        super().__init__(message)
        self.service = service


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# Ports this process has handed out (with their metrics neighbours). A picked port stays free
# until its service binds it, so without this two meshes started side by side (invsaga demo
# starts three) could be handed the same port, or one's port could be another's metrics port.
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A port nothing listens on whose metrics neighbour (+1000) is free too.

    No port, nor its neighbour, is handed out twice by one process.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        metrics = port + METRICS_PORT_OFFSET
        if metrics >= 65536 or not port_free(metrics):
            continue
        with _handed_out_lock:
            if port in _handed_out or metrics in _handed_out:
                continue
            _handed_out.update((port, metrics))
        return port
    raise LaunchError("no free port found")


# A service only that process serves: a health check on it cannot be answered by another
# process that happens to hold the port.
HEALTH_NAMES: dict[str, str] = {
    "coordinator": "invsaga.coordinator.v1.SagaCoordinatorService",
    **{name: f"invsaga.{name}.v1.{name.capitalize()}StepService" for name in SERVICES if name != "coordinator"},
}
PORT_IN_USE = 3  # the exit status of a process whose port is taken


class PortTaken(LaunchError):
    pass


def wait_serving(
    address: str, timeout: float, proc: subprocess.Popen | None = None, service: str | None = None
) -> None:
    """Wait until ``address`` reports SERVING (for ``service``'s own gRPC service, if given)."""
    deadline = time.monotonic() + timeout
    request = health_pb2.HealthCheckRequest(service=HEALTH_NAMES.get(service or "", ""))
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                kind = PortTaken if proc.returncode == PORT_IN_USE else LaunchError
                raise kind(f"{service or 'process'} on {address} exited with status {proc.returncode}", service)
            with contextlib.suppress(grpc.RpcError):
                if stub.Check(request, timeout=1.0).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
    raise LaunchError(f"{address} did not report SERVING within {timeout:.0f}s")


# Settings that choose how a process checks its callers (invsaga.runtime.security).
SECURITY_SETTINGS = ("INVSAGA_AUTH", "INVSAGA_AUTH_TOKENS", "INVSAGA_AUTH_TOKEN_HASHES", "INVSAGA_TLS_CLIENT_AUTH")


def dev_defaults(env: dict[str, str]) -> dict[str, str]:
    """A development mesh: authentication explicitly off and only the loopback address bound,
    unless the environment says otherwise (tests of security pass their own settings).

    A process started on its own with nothing configured refuses every call; a mesh started
    here is for one machine, and each of its processes says every minute that auth is off.
    """
    if not any(env.get(name) for name in SECURITY_SETTINGS):
        env["INVSAGA_AUTH"] = "off"
    env.setdefault("INVSAGA_HOST", "127.0.0.1")
    return env


@dataclass
class Mesh:
    """Six processes on the given ports, sharing one environment."""

    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    database_url: str | None = None
    data_dir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    services: Sequence[str] = SERVICES
    log_dir: str | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    # The embedded server started for this mesh when no URL was given (see start).
    embedded: Any = None
    embedded_url: str = ""
    # Each process gets SIGTERM when the thread that started it ends (Linux): for ``invsaga up``,
    # which starts them from its main thread, so that they do not outlive it even if it is killed.
    die_with_parent: bool = False

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def process_env(self, service: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({f"INVSAGA_{name.upper()}_ADDR": self.address(name) for name in SERVICES})
        if self.database_url or self.embedded_url:
            env["INVSAGA_DATABASE_URL"] = self.database_url or self.embedded_url
        if self.data_dir:
            env["INVSAGA_DATA_DIR"] = self.data_dir
        env["INVSAGA_PORT"] = str(self.ports[service])
        env.pop("INVSAGA_METRICS_PORT", None)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.update(self.env)
        return env

    def check_ports(self) -> None:
        for service in self.services:
            port = self.ports[service]
            for p in (port, port + METRICS_PORT_OFFSET):
                if not port_free(p):
                    raise PortTaken(f"port {p} is already in use (wanted by {service})")

    def start_one(
        self, service: str, extra_env: Mapping[str, str] | None = None, name: str | None = None
    ) -> subprocess.Popen:
        """Start ``service``; ``name`` (default the service) keys a second replica in ``procs``."""
        name = name or service
        env = self.process_env(service)
        env.update(extra_env or {})
        dev_defaults(env)
        log = None
        if self.log_dir:
            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
            log = Path(self.log_dir) / f"{name}.log"
        proc = self.spawn(service, env, log)
        self.procs[name] = proc
        return proc

    def spawn(self, service: str, env: dict[str, str], log: Path | None) -> subprocess.Popen:
        """``python -m <service>`` in a session of its own, its output appended to ``log``."""
        out: Any = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below, the child has its copy
        try:
            return subprocess.Popen(
                [sys.executable, "-m", MODULES[service]],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at a terminal reaches the launcher only; it stops them in order
                preexec_fn=_die_with_parent(os.getpid()) if self.die_with_parent else None,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()

    def start(self, timeout: float = 60.0) -> "Mesh":
        """Start the database (unless a URL is given) and every service; wait until each serves."""
        try:
            self.start_database()
            return self.start_processes(timeout)
        except BaseException:
            self.stop()
            raise

    def start_processes(self, timeout: float = 60.0) -> "Mesh":
        """Start every service and wait until each serves; on failure, stop the ones started.

        With ports from ``random_ports``, another process may take one between the pick and the
        bind; the processes then start again on new ports (a few times) instead of failing.
        """
        # Participants first so the coordinator's recovery finds them up.
        order = [s for s in self.services if s != "coordinator"] + [s for s in self.services if s == "coordinator"]
        attempts = 3
        while True:
            try:
                self.check_ports()
                for service in order:
                    self.start_one(service)
                for service in order:
                    wait_serving(self.address(service), timeout, self.procs[service], service)
                return self
            except BaseException as error:
                self.stop_processes()
                attempts -= 1
                if not (isinstance(error, PortTaken) and isinstance(self.ports, RandomPorts) and attempts):
                    raise
                self.ports = random_ports()

    def uses_embedded(self) -> bool:
        """No URL given here, in ``env`` or in the environment: the data directory's embedded server."""
        return not (self.database_url or self.env.get("INVSAGA_DATABASE_URL") or os.environ.get("INVSAGA_DATABASE_URL"))

    def start_database(self) -> None:
        """With no URL given (here, in ``env`` or the environment), start the embedded server.

        The handle is kept before the server starts, so that ``stop`` stops a server whose start
        failed half way (started, but its database not created).
        """
        if not self.uses_embedded() or self.embedded is not None:
            return
        from invsaga.runtime.embedded import EmbeddedPostgres

        self.embedded = EmbeddedPostgres(Path(self.data_dir or "./data") / "postgres")
        self.embedded_url = self.embedded.start()

    def wait_ready(self, service: str, timeout: float = 60.0) -> None:
        wait_serving(self.address(service), timeout, self.procs.get(service), service)

    def kill(self, service: str, sig: int = signal.SIGKILL) -> int:
        proc = self.procs[service]
        proc.send_signal(sig)
        return proc.wait(timeout=60)

    def stop(self, timeout: float = 15.0) -> dict[str, int | None]:
        """Stop every process (SIGTERM, SIGKILL after ``timeout``), then the embedded server."""
        codes = self.stop_processes(timeout)
        self.stop_database()
        return codes

    def stop_processes(self, timeout: float = 15.0) -> dict[str, int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes: dict[str, int | None] = {}
        for service, proc in self.procs.items():
            try:
                codes[service] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                codes[service] = proc.wait()
        self.procs.clear()
        return codes

    def stop_database(self) -> None:
        """Stop the embedded server (``pg_ctl stop``), if this mesh started one."""
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded, self.embedded_url = None, ""

    def __enter__(self) -> "Mesh":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RandomPorts(dict):
    """Ports picked by ``random_ports``: a mesh may pick others if one is taken meanwhile."""


def random_ports() -> dict[str, int]:
    return RandomPorts({service: free_port() for service in SERVICES})


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """``sig`` to the process group of ``proc`` (it leads its own session), or to it alone."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        if proc.poll() is None:
            proc.send_signal(sig)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn``: the child gets SIGTERM when the thread that started it ends (Linux only).

    Also covers a parent that died between the fork and the ``prctl``.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, in the parent, not after the fork

    def setup() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return setup
