"""The suite's meshes: their processes forked from one parent that has already imported their code.

Most of a process's start is importing grpc, SQLAlchemy, psycopg and alembic: about 0.5 s of
CPU each, 3 s for a mesh, and the suite starts some eighty meshes. ``PreloadedMesh`` starts one
preloaded parent per test worker (``python -m tests.preloaded``), which imports every service's
module once and then forks on request. Each fork runs the same ``run_process`` as ``python -m
<service>``, with its own session, name, environment, log file and exit status, and exits
through the interpreter's normal shutdown. The parent never opens a gRPC channel, starts a
thread or an event loop, so the fork is safe; it reaps its children, reports their exit status,
and exits when the worker does (its stdin closes). Everything else (the ports, waiting until
each serves, stopping in order) is the launcher's own, as ``invsaga up`` runs it.

The standard library's ``multiprocessing`` fork server does not fit: it runs the launching
program's main script again in each child, and reports exits through its own objects.

The protocol is JSON lines: the worker writes ``{"service", "module", "env", "log"}`` to the
parent's stdin; the parent answers ``{"pid"}`` on stdout, and later ``{"exited", "code"}`` for
each child (``code`` as ``Popen.returncode``: ``-N`` for signal N).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from invsaga.launcher import MODULES, ROOT, Mesh

PR_SET_NAME = 15  # <linux/prctl.h>


class Forked:
    """A forked service process, with the part of ``subprocess.Popen`` the launcher uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = threading.Event()

    def _exit(self, code: int) -> None:
        self.returncode = code
        self._exited.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Parent:
    """The launcher's handle on the preloaded parent: requests, answers and exit reports."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.preloaded"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self.children: dict[int, Forked] = {}
        self.answers: list[Forked | str] = []
        self.answered = threading.Condition()
        self.asking = threading.Lock()
        threading.Thread(target=self._read, name="preloaded-parent", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            with self.answered:
                if "pid" in message:
                    child = self.children[message["pid"]] = Forked(message["pid"])
                    self.answers.append(child)
                elif "error" in message:
                    self.answers.append(message["error"])
                elif (exited := self.children.pop(message["exited"], None)) is not None:
                    exited._exit(message["code"])
                self.answered.notify_all()
        # The parent is gone (killed: the launcher holds its stdin). Nothing would report its
        # children's exits any more, so they are stopped rather than left running unwatched.
        with self.answered:
            for child in self.children.values():
                for kill in (os.killpg, os.kill):  # its group, and it alone if it has none yet
                    with contextlib.suppress(ProcessLookupError):
                        kill(child.pid, signal.SIGKILL)
                child._exit(-signal.SIGKILL)
            self.children.clear()
            self.answers.append("the preloaded parent exited")
            self.answered.notify_all()

    def fork(self, request: dict[str, Any]) -> Forked:
        assert self.proc.stdin is not None
        with self.asking:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
            with self.answered:
                self.answered.wait_for(lambda: bool(self.answers))
                answer = self.answers.pop(0)
        if isinstance(answer, str):
            raise OSError(answer)
        return answer


_parent: _Parent | None = None
_parent_lock = threading.Lock()


class PreloadedMesh(Mesh):
    """A ``Mesh`` whose processes are forks of the preloaded parent (started on first use)."""

    def spawn(self, service: str, env: dict[str, str], log: Path | None) -> Forked:  # type: ignore[override]
        global _parent
        with _parent_lock:
            if _parent is None or _parent.proc.poll() is not None:
                _parent = _Parent()
            parent = _parent
        return parent.fork({"service": service, "module": MODULES[service], "env": env, "log": str(log or "")})


# ---- the preloaded parent (python -m tests.preloaded) ----


def _become(request: dict[str, Any], keep: list[int]) -> None:
    """In the fork: become what ``python -m <module>`` would be, then run it (never returns)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in keep:
        os.close(fd)
    os.setsid()  # its own session, as start_new_session gives an exec'd process
    ctypes.CDLL(None).prctl(PR_SET_NAME, request["service"].encode()[:15], 0, 0, 0)  # the name ps and top show
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["log"] or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    os.environ.clear()
    os.environ.update(request["env"])
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    from invsaga.runtime.server import run_process

    run_process(request["service"], importlib.import_module(f"{request['module']}.server").build, [])


def _serve(modules: list[str]) -> None:
    for module in modules:
        importlib.import_module(module)
    out: IO[str] = sys.stdout
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is sys.stdin:
                line = sys.stdin.readline()
                if not line:
                    return  # the launcher is gone
                request = json.loads(line)
                try:
                    pid = os.fork()
                except OSError as err:
                    print(json.dumps({"error": str(err)}), file=out, flush=True)
                    continue
                if pid == 0:
                    selector.close()
                    _become(request, [wake_r, wake_w])
                    raise SystemExit(0)
                print(json.dumps({"pid": pid}), file=out, flush=True)
            else:
                os.read(wake_r, 4096)
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    print(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}), file=out, flush=True)


if __name__ == "__main__":
    _serve(["invsaga.runtime.server", *(f"{module}.server" for module in MODULES.values())])
