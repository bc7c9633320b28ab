"""The CLI's reservation commands (cancel, resume, extend) and its connection settings, against
real meshes: the coordinator's address and an API token from flags or from the environment,
and bad input answered with one line and exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from invsaga.coordinator.v1 import coordinator_pb2 as pb
from tests.integration.test_tenants import TOKENS, TokenClient, token_mesh  # noqa: F401 (a fixture)
from tests.saga_support import WH, MeshClient
from tests.support import start_mesh


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    return subprocess.run(
        [sys.executable, "-m", "invsaga.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture(scope="module")
async def client(tmp_path_factory):
    mesh = start_mesh(tmp_path_factory.mktemp("cli-lifecycle"))
    c = MeshClient(mesh)
    try:
        await c.seed([WH("WH-CLI")], [("WH-CLI", "SKU-CLI", 100)])
        yield c
        await c.check_books()
    finally:
        await c.close()
        mesh.stop()


async def test_extend_then_cancel_a_reservation_and_what_is_refused(client):
    saga = await client.run({"SKU-CLI": 3})
    assert saga.status == pb.SAGA_STATUS_COMPLETED
    address = {"INVSAGA_COORDINATOR_ADDR": client.mesh.address("coordinator")}  # no --coordinator flag

    shown = cli("get", saga.saga_id, env=address)
    assert shown.returncode == 0 and "reservation RESERVED" in shown.stdout, shown.stdout + shown.stderr
    extended = cli("extend", saga.saga_id, "--until", "2h", env=address)
    assert extended.returncode == 0 and "reservation RESERVED" in extended.stdout, extended.stdout + extended.stderr
    cancelled = cli("cancel", saga.saga_id, "--reason", "wrong colour", env=address)
    assert cancelled.returncode == 0 and "reservation RELEASED" in cancelled.stdout, cancelled.stdout
    got = await client.get(saga.saga_id)
    assert got.cancel_reason == "wrong colour" and await client.held_locks(saga.saga_id) == []

    # Refusals: the server's code and reason on one line of stderr, exit status 1.
    again = cli("extend", saga.saga_id, "--until", "2h", env=address)
    assert again.returncode == 1 and "FAILED_PRECONDITION" in again.stderr and "RESERVATION_ENDED" in again.stderr
    resumed = cli("resume", saga.saga_id, env=address)
    assert resumed.returncode == 1 and "SAGA_NOT_FAILED" in resumed.stderr
    missing = cli("cancel", "0" * 32, env=address)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and len(missing.stderr.splitlines()) == 1
    unknown = cli("cancel", "no-such-saga", env=address)  # not a whole id: no saga has it as a prefix
    assert unknown.returncode == 2 and "no saga id starts with" in unknown.stderr

    # Bad input: one line on stderr, exit status 2, no traceback.
    for args in (
        ("extend", saga.saga_id, "--until", "tomorrow"),
        ("extend", saga.saga_id, "--until", "2026-12-24T18:00:00"),
    ):
        bad = cli(*args, env=address)
        assert bad.returncode == 2 and "--until" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    unreadable = cli("get", saga.saga_id, "--tls-ca", "/no/such/ca.pem", env=address)
    assert unreadable.returncode == 2 and "TLS file" in unreadable.stderr and "Traceback" not in unreadable.stderr


async def test_a_mesh_with_tokens_is_reached_with_the_flag_or_the_environment(token_mesh):  # noqa: F811
    admin = TokenClient(token_mesh, "admin")
    try:
        await admin.seed([WH("WH-T")], [("WH-T", "SKU-T", 10)])
        saga = await admin.run({"SKU-T": 1})
    finally:
        await admin.close()
    address = token_mesh.address("coordinator")
    token = TOKENS["admin"][0]
    refused = cli("get", saga.saga_id, "--coordinator", address)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
    by_flag = cli("get", saga.saga_id, "--coordinator", address, "--token", token)
    assert by_flag.returncode == 0 and saga.saga_id in by_flag.stdout, by_flag.stdout + by_flag.stderr
    # `list` shows whole saga ids even in 80 columns, so they can be copied.
    by_env = cli("list", env={"INVSAGA_COORDINATOR_ADDR": address, "INVSAGA_TOKEN": token, "COLUMNS": "80"})
    assert by_env.returncode == 0 and saga.saga_id in by_env.stdout, by_env.stdout + by_env.stderr
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("invsaga ")
