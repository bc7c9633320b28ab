"""Every ``invsaga`` client and operator command, run as a user runs it (a subprocess) against
real meshes: JSON output parsed back (the proto3 JSON mapping), saga ids by unique prefix,
paging, bad input answered with one line and exit status 2 (never a traceback), failed calls
with exit status 1, shell completion, and a mesh with mutual TLS and tokens reached both with
flags and with environment variables. Every test that changes stock ends with the books checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from invsaga.certs import CLIENT, make_certs
from invsaga.launcher import Mesh, random_ports
from invsaga.runtime.config import SERVICES
from invsaga.runtime.security import hash_token
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from tests.saga_support import WH, MeshClient
from tests.support import SuiteMesh, new_pg_database, start_mesh

ADMIN_TOKEN = "cli-operator-token-0123456789"
CLIENT_TOKEN = "cli-client-token-0123456789"


def cli(*args: str, env: dict[str, str] | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    return subprocess.run(
        [sys.executable, "-m", "invsaga.cli", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**base, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def as_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(ok(result))


def json_lines(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in ok(result).splitlines() if line.strip()]


def refused(result: subprocess.CompletedProcess, status: int, *words: str) -> str:
    """A refusal: the exit status, one line on stderr naming ``words``, no traceback."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def addresses(mesh: Mesh) -> dict[str, str]:
    return {f"INVSAGA_{service.upper()}_ADDR": mesh.address(service) for service in mesh.services}


def order_file(directory: Path, name: str, **fields) -> str:
    data = {
        "order_id": f"ORD-{name}",
        "customer_id": "CUST-CLI",
        "allocation_strategy": "priority",
        "items": [{"product_id": "P-SKU-C1", "sku": "SKU-C1", "quantity": 2}],
        **fields,
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def books_by_cli(env: dict[str, str], *flags: str) -> None:
    """The books, read with the CLI: on_hand = available + locked, locked = Σ HELD locks."""
    stock = as_json(cli("stock", "list", "--all", "-o", "json", *flags, env=env)).get("stock", [])
    locks = as_json(cli("locks", "--status", "held", "--all", "-o", "json", *flags, env=env)).get("locks", [])
    held: dict[tuple[str, str], int] = {}
    for lock in locks:
        key = (lock["warehouseId"], lock["sku"])
        held[key] = held.get(key, 0) + int(lock["quantity"])
    assert stock
    for row in stock:
        on_hand, locked, available = (int(row.get(k, "0")) for k in ("onHand", "locked", "available"))
        assert on_hand == available + locked and min(on_hand, locked, available) >= 0, row
        assert locked == held.get((row["warehouseId"], row["sku"]), 0), row


@pytest.fixture(scope="module")
async def client(tmp_path_factory):
    mesh = start_mesh(tmp_path_factory.mktemp("cli-commands"))
    c = MeshClient(mesh)
    try:
        await c.seed([WH("WH-C1", priority=9), WH("WH-C2")], [("WH-C1", "SKU-C1", 200), ("WH-C2", "SKU-C1", 30)])
        yield c
        await c.check_books()
    finally:
        await c.close()
        mesh.stop()


async def test_saga_commands_with_json_output_and_id_prefixes(client, tmp_path):
    env = addresses(client.mesh)
    started = as_json(cli("start", order_file(tmp_path, "one"), "-o", "json", env=env))
    saga_id = started["sagaId"]
    assert len(saga_id) == 32 and started["saga"]["sagaId"] == saga_id

    # watch by a prefix: a JSON line per event, to the saga's end.
    events = json_lines(cli("watch", saga_id[:10], "-o", "json", env=env))
    assert [int(e["seq"]) for e in events] == list(range(1, len(events) + 1))
    assert {e["sagaId"] for e in events} == {saga_id}
    assert events[-1]["type"] == "SAGA_EVENT_TYPE_SAGA_COMPLETED"

    got = as_json(cli("get", saga_id[:8], "-o", "json", env=env))["saga"]
    assert got["sagaId"] == saga_id and got["status"] == "SAGA_STATUS_COMPLETED"
    assert got["reservation"]["state"] == "RESERVATION_STATE_RESERVED"
    assert yaml.safe_load(ok(cli("get", saga_id, "-o", "yaml", env=env)))["saga"]["requestId"] == got["requestId"]
    # A table piped shows the whole id, and times with their zone.
    table = ok(cli("get", saga_id[:8], env=env))
    assert saga_id in table and "reservation RESERVED" in table

    # Sagas until two share a first character (at most 17): a prefix both have is ambiguous.
    ids = [saga_id]
    while len({i[0] for i in ids}) == len(ids):
        ids.append(await client.start({"SKU-C1": 1}))
    for other in ids[1:]:
        await client.wait(other)
    first = next(i for i in ids if sum(j[0] == i[0] for j in ids) > 1)
    refused(cli("get", first[0], env=env), 2, "ambiguous")
    refused(cli("watch", "zz-not-a-saga", env=env), 2, "no saga id starts with")
    refused(cli("cancel", "", env=env), 2)
    refused(cli("get", "0" * 32, env=env), 1, "NOT_FOUND")  # a whole id is asked for as it is

    # list: filters, pages, every page.
    listed = as_json(cli("list", "--all", "--status", "completed", "--since", "1h", "-o", "json", env=env))
    assert set(ids) <= {s["sagaId"] for s in listed["sagas"]} and not listed.get("nextPageToken")
    page = as_json(cli("list", "--limit", "1", "-o", "json", env=env))
    assert len(page["sagas"]) == 1 and page["nextPageToken"]
    second = as_json(cli("list", "--limit", "1", "--page-token", page["nextPageToken"], "-o", "json", env=env))
    assert second["sagas"][0]["sagaId"] != page["sagas"][0]["sagaId"]
    assert saga_id in ok(cli("list", "--order", "ORD-one", env=env))
    assert as_json(cli("list", "--order", "ORD-none", "-o", "json", env=env)).get("sagas", []) == []

    # extend, cancel, resume by prefix.
    extended = as_json(cli("extend", saga_id[:8], "--until", "2h", "-o", "json", env=env))
    assert extended["reservation"]["state"] == "RESERVATION_STATE_RESERVED"
    cancelled = as_json(cli("cancel", saga_id[:8], "--reason", "changed mind", "-o", "json", env=env))
    assert cancelled["saga"]["sagaId"] == saga_id
    assert (await client.get(saga_id)).cancel_reason == "changed mind"
    assert await client.held_locks(saga_id) == []
    refused(cli("resume", saga_id[:8], env=env), 1, "FAILED_PRECONDITION", "SAGA_NOT_FAILED")
    refused(cli("extend", saga_id[:8], "--until", "2h", env=env), 1, "RESERVATION_ENDED")

    # Bad input: exit 2, one line.
    refused(cli("start", str(tmp_path / "missing.yaml"), env=env), 2, "missing.yaml")
    bad_enum = order_file(tmp_path, "bad-enum", allocation_strategy="cheapest")
    refused(cli("start", bad_enum, env=env), 2, "CHEAPEST")
    zero = order_file(tmp_path, "zero", items=[{"sku": "SKU-C1", "quantity": 0}])
    refused(cli("start", zero, env=env), 2, "INVALID_ARGUMENT", "quantity")
    refused(cli("list", "--status", "bogus", env=env), 2, "--status")
    refused(cli("list", "--limit", "0", env=env), 2, "--limit")
    refused(cli("extend", ids[1], "--until", "next week", env=env), 2, "--until")
    for other in ids[1:]:
        await client.coordinator.CancelSaga(pb.CancelSagaRequest(saga_id=other, reason="test over"), timeout=30)
    await client.check_books()


async def test_warehouse_and_stock_commands(client):
    env = addresses(client.mesh)
    made = as_json(
        cli(
            "warehouses",
            "upsert",
            "WH-NEW",
            "--name",
            "New",
            "--lat",
            "31.2",
            "--lon",
            "121.5",
            "--sku",
            "SKU-N",
            "--per-unit",
            "1.5",
            "-o",
            "json",
            env=env,
        )
    )["warehouse"]
    assert made["status"] == "WAREHOUSE_STATUS_ACTIVE" and made["skus"] == ["SKU-N"]
    # Fields not given keep their values.
    changed = as_json(cli("warehouses", "upsert", "WH-NEW", "--priority", "3", "-o", "json", env=env))["warehouse"]
    assert changed["name"] == "New" and changed["priority"] == 3 and changed["cost"]["perUnit"] == 1.5
    added = as_json(cli("warehouses", "add-skus", "WH-NEW", "SKU-M", "-o", "json", env=env))["warehouse"]
    assert set(added["skus"]) == {"SKU-N", "SKU-M"}
    assert as_json(cli("warehouses", "get", "WH-NEW", "-o", "json", env=env))["warehouse"]["name"] == "New"
    everything = as_json(cli("warehouses", "list", "--all", "--limit", "1", "-o", "json", env=env))
    assert {"WH-C1", "WH-C2", "WH-NEW"} <= {w["warehouseId"] for w in everything["warehouses"]}
    assert "WH-NEW" in ok(cli("warehouses", "list", "--status", "active", env=env))

    level = as_json(
        cli("stock", "set", "WH-NEW", "SKU-N", "10", "--product-id", "P-N", "--bin", "B-1", "-o", "json", env=env)
    )
    assert level["stock"]["onHand"] == "10" and level["stock"]["bin"] == "B-1"
    assert (
        as_json(cli("stock", "adjust", "WH-NEW", "SKU-N", "5", "--reason", "found", "-o", "json", env=env))["stock"][
            "onHand"
        ]
        == "15"
    )
    assert as_json(cli("stock", "adjust", "WH-NEW", "SKU-N", "-3", "-o", "json", env=env))["stock"]["onHand"] == "12"
    kept = as_json(cli("stock", "set", "WH-NEW", "SKU-N", "20", "-o", "json", env=env))["stock"]  # bin and product kept
    assert (kept["onHand"], kept["bin"], kept["productId"]) == ("20", "B-1", "P-N")
    got = as_json(cli("stock", "get", "WH-NEW", "SKU-N", "-o", "json", env=env))["stock"]
    assert got["available"] == "20"
    assert [
        s["sku"] for s in as_json(cli("stock", "list", "--warehouse-id", "WH-NEW", "-o", "json", env=env))["stock"]
    ] == ["SKU-N"]
    assert "SKU-N" in ok(cli("stock", "list", "--sku", "SKU-N", env=env))

    refused(cli("stock", "set", "WH-NEW", "SKU-N", "-1", env=env), 2, "INVALID_ARGUMENT", "on_hand")
    refused(cli("stock", "adjust", "WH-NEW", "SKU-N", "0", env=env), 2, "INVALID_ARGUMENT", "delta")
    refused(cli("stock", "set", "WH-NEW", "SKU-N", "many", env=env), 2, "ON_HAND")
    refused(cli("stock", "get", "WH-NEW", "SKU-NONE", env=env), 1, "NOT_FOUND")
    refused(cli("warehouses", "upsert", "WH-NAMELESS", env=env), 2, "INVALID_ARGUMENT", "warehouse.name")
    refused(cli("warehouses", "list", "--status", "open", env=env), 2, "--status")
    refused(cli("warehouses", "upsert", "WH-NEW", "--file", "/no/such/file.yaml", env=env), 2, "file.yaml")
    refused(cli("stock", "frobnicate", env=env), 2, "frobnicate")
    unreachable = {**env, "INVSAGA_INVENTORY_ADDR": "127.0.0.1:1"}
    refused(cli("stock", "get", "WH-NEW", "SKU-N", env=unreachable), 1, "UNAVAILABLE")
    await client.check_books()
    books_by_cli(env)


async def test_picklist_lock_allocation_and_notification_commands(client):
    env = addresses(client.mesh)

    def on_hand() -> int:
        rows = as_json(cli("stock", "list", "--sku", "SKU-C1", "-o", "json", env=env))["stock"]
        return sum(int(row["onHand"]) for row in rows)

    before = on_hand()
    saga = await client.run({"SKU-C1": 4})
    saga_id = saga.saga_id

    locks = as_json(cli("locks", "--saga", saga_id, "-o", "json", env=env))["locks"]
    assert sum(int(x["quantity"]) for x in locks) == 4 and {x["status"] for x in locks} == {"LOCK_STATUS_HELD"}
    where = locks[0]["warehouseId"]
    assert saga_id in ok(cli("locks", "--status", "held", "--warehouse-id", where, env=env))
    allocations = as_json(cli("allocations", "list", "--saga", saga_id, "-o", "json", env=env))["allocations"]
    assert [a["status"] for a in allocations] == ["ALLOCATION_STATUS_ACTIVE"]
    one = as_json(cli("allocations", "get", allocations[0]["allocationId"], "-o", "json", env=env))
    assert one["allocation"]["sagaId"] == saga_id
    refused(cli("allocations", "cancel", "AL-none", env=env), 1, "NOT_FOUND")
    notices = as_json(cli("notifications", "--saga", saga_id, "-o", "json", env=env))["notifications"]
    assert [n["kind"] for n in notices] == ["NOTIFICATION_KIND_RESERVATION_CONFIRMED"]
    assert "RESERVATION_CONFIRMED" in ok(cli("notifications", "--kind", "reservation_confirmed", env=env))
    refused(cli("notifications", "--kind", "postcard", env=env), 2, "--kind")

    picklists = as_json(cli("picklist", "list", "--saga", saga_id, "-o", "json", env=env))["picklists"]
    assert {p["status"] for p in picklists} == {"PICKLIST_STATUS_PENDING"}
    picklist_id = picklists[0]["picklistId"]
    lines = as_json(cli("picklist", "get", picklist_id, "-o", "json", env=env))["picklist"]["lines"]
    assert lines and all(line["sku"] == "SKU-C1" for line in lines)
    for picklist in picklists:
        started = as_json(cli("picklist", "start", picklist["picklistId"], "-o", "json", env=env))["picklist"]
        assert started["status"] == "PICKLIST_STATUS_PROCESSING"
    assert all(x.get("picking") for x in as_json(cli("locks", "--saga", saga_id, "-o", "json", env=env))["locks"])
    for picklist in picklists:
        done = ok(cli("picklist", "complete", picklist["picklistId"], env=env))
        assert picklist["picklistId"] in done and "COMPLETED" in done
    assert on_hand() == before - 4
    consumed = as_json(cli("locks", "--saga", saga_id, "-o", "json", env=env))["locks"]
    assert {x["status"] for x in consumed} == {"LOCK_STATUS_CONSUMED"}
    listed = ok(
        cli("picklist", "list", "--status", "completed", "--warehouse-id", picklists[0]["warehouseId"], env=env)
    )
    assert picklist_id in listed
    refused(cli("picklist", "cancel", picklist_id, env=env), 1, "FAILED_PRECONDITION")
    refused(cli("picklist", "get", "PL-none", env=env), 1, "NOT_FOUND")
    refused(cli("picklist", "list", "--status", "lost", env=env), 2, "--status")
    await client.check_books()
    books_by_cli(env)


def test_help_on_every_flag_and_shell_completion(tmp_path):
    from invsaga.cli import build_parser

    mine = {"start", "watch", "get", "list", "cancel", "resume", "extend", "migrate", "seed", "demo", "completion"}
    mine |= {"stock", "locks", "picklist", "warehouses", "allocations", "notifications"}
    parser = build_parser(["--help"])
    commands = next(a for a in parser._actions if a.choices and "stock" in a.choices).choices

    def check(name: str, command) -> None:
        for action in command._actions:
            if action.choices and isinstance(action.choices, dict):  # a group: every sub-command
                for sub_name, sub in action.choices.items():
                    check(f"{name} {sub_name}", sub)
            else:
                assert action.help, f"invsaga {name}: {action.option_strings or action.dest} has no help"

    for name in sorted(mine):
        check(name, commands[name])

    script = ok(cli("completion", "bash"))
    assert "invsaga" in script and "complete" in script
    out = tmp_path / "completions"
    for line, expected in (("invsaga stock s", {"set"}), ("invsaga locks --status ", {"HELD", "CONSUMED"})):
        env = {
            "_ARGCOMPLETE": "1",
            "_ARGCOMPLETE_IFS": " ",
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        }
        ok(cli(env=env))
        assert expected <= set(out.read_text().split()), out.read_text()
    version = ok(cli("--version"))
    assert version.startswith("invsaga ")


@pytest.fixture(scope="module")
def secured_mesh(tmp_path_factory):
    """All six processes under mutual TLS; an operator's token makes its caller an admin."""
    workdir = tmp_path_factory.mktemp("cli-secured")
    certs = workdir / "certs"
    make_certs(certs, identities=(*SERVICES, CLIENT))
    mesh = SuiteMesh(
        ports=random_ports(),
        database_url=new_pg_database(),
        data_dir=str(workdir / "data"),
        log_dir=str(workdir / "logs"),
        env={
            "INVSAGA_LOG_LEVEL": "WARNING",
            "INVSAGA_AUTH": "mtls",
            "INVSAGA_TLS_CA": str(certs / "ca.pem"),
            "INVSAGA_AUTH_TOKENS": f"{hash_token(ADMIN_TOKEN)}:admin,{hash_token(CLIENT_TOKEN)}:client",
        },
    )
    from tests.integration.test_security import creds, wait_serving

    order_ = [*SERVICES[1:], SERVICES[0]]
    try:
        mesh.check_ports()
        for service in order_:
            mesh.start_one(
                service,
                {
                    "INVSAGA_TLS_CERT": str(certs / f"{service}.pem"),
                    "INVSAGA_TLS_KEY": str(certs / f"{service}-key.pem"),
                },
            )
        for service in order_:
            wait_serving(mesh.address(service), creds(certs), mesh.procs[service])
        yield mesh, certs
    finally:
        mesh.stop()


def test_a_secured_mesh_is_reached_with_flags_or_the_environment(secured_mesh, tmp_path):
    mesh, certs = secured_mesh
    tls = ["--tls-ca", str(certs / "ca.pem"), "--tls-cert", str(certs / f"{CLIENT}.pem")]
    tls += ["--tls-key", str(certs / f"{CLIENT}-key.pem")]
    inventory = ["--inventory", mesh.address("inventory")]
    admin = [*tls, "--token", ADMIN_TOKEN]

    # Flags: the operator's token on top of the client certificate.
    ok(
        cli(
            "warehouses",
            "upsert",
            "WH-S",
            "--name",
            "Secure",
            "--sku",
            "SKU-S",
            "--capacity",
            "1000",
            "--warehouse",
            mesh.address("warehouse"),
            *admin,
        )
    )
    level = as_json(cli("stock", "set", "WH-S", "SKU-S", "40", *inventory, *admin, "-o", "json"))
    assert level["stock"]["onHand"] == "40"
    # The certificate alone is a client: no operator RPCs; no certificate: no connection.
    refused(cli("stock", "get", "WH-S", "SKU-S", *inventory, *tls), 1, "PERMISSION_DENIED")
    refused(cli("stock", "get", "WH-S", "SKU-S", *inventory, "--token", ADMIN_TOKEN), 1, "UNAVAILABLE")
    refused(cli("stock", "get", "WH-S", "SKU-S", *inventory, *tls, "--token", "wrong"), 1, "UNAUTHENTICATED")
    refused(cli("stock", "get", "WH-S", "SKU-S", *inventory, *tls[:2]), 1, "UNAVAILABLE")  # TLS, no certificate
    refused(cli("stock", "get", "WH-S", "SKU-S", *inventory, *tls[:4]), 2, "--tls-key")
    refused(cli("stock", "get", "WH-S", "SKU-S", *inventory, *tls, "--token-file", str(tmp_path / "none")), 2, "token")

    # The environment: addresses, TLS files and a token file, the way a deployment sets them.
    token_file = tmp_path / "token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    env = {
        **addresses(mesh),
        "INVSAGA_TLS_CA": str(certs / "ca.pem"),
        "INVSAGA_TLS_CERT": str(certs / f"{CLIENT}.pem"),
        "INVSAGA_TLS_KEY": str(certs / f"{CLIENT}-key.pem"),
        "INVSAGA_TOKEN_FILE": str(token_file),
    }
    assert as_json(cli("stock", "adjust", "WH-S", "SKU-S", "-5", "-o", "json", env=env))["stock"]["onHand"] == "35"
    # A saga started with a client's token from the environment, then found by prefix.
    client_env = {**env, "INVSAGA_TOKEN": CLIENT_TOKEN}
    order = tmp_path / "order.json"
    order.write_text(json.dumps({"order_id": "ORD-S", "items": [{"sku": "SKU-S", "quantity": 3}]}))
    saga_id = as_json(cli("start", str(order), "-o", "json", env=client_env))["sagaId"]
    events = json_lines(cli("watch", saga_id[:8], "-o", "json", env=client_env))
    assert events[-1]["type"] == "SAGA_EVENT_TYPE_SAGA_COMPLETED"
    assert as_json(cli("get", saga_id[:8], "-o", "json", env=client_env))["saga"]["status"] == "SAGA_STATUS_COMPLETED"
    # The same by flags, the client token read from a file.
    client_file = tmp_path / "client-token"
    client_file.write_text(CLIENT_TOKEN)
    by_flags = ["--coordinator", mesh.address("coordinator"), *tls, "--token-file", str(client_file)]
    assert saga_id in {s["sagaId"] for s in as_json(cli("list", "-o", "json", *by_flags))["sagas"]}
    locks = as_json(cli("locks", "--saga", saga_id, "-o", "json", env=env))["locks"]
    assert sum(int(x["quantity"]) for x in locks) == 3
    ok(cli("cancel", saga_id[:8], "--reason", "test over", *by_flags))
    books_by_cli(env)


def test_seed_reaches_a_secured_mesh_with_an_operators_token(secured_mesh, tmp_path):
    mesh, certs = secured_mesh
    seed = tmp_path / "seed.yaml"
    seed.write_text(
        yaml.safe_dump(
            {
                "warehouses": [{"id": "WH-SEED", "name": "Seeded", "lat": 31.2, "lon": 121.5, "capacity": 500}],
                "stock": [{"warehouse": "WH-SEED", "sku": "SKU-SEED", "product_id": "P-SEED", "on_hand": 25}],
            }
        )
    )
    where = ["--warehouse", mesh.address("warehouse"), "--inventory", mesh.address("inventory")]
    tls = ["--tls-ca", str(certs / "ca.pem"), "--tls-cert", str(certs / f"{CLIENT}.pem")]
    tls += ["--tls-key", str(certs / f"{CLIENT}-key.pem")]
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN)

    # Plaintext to a TLS mesh does not connect; a client certificate alone is no operator.
    assert cli("seed", str(seed), *where).returncode != 0
    refused(cli("seed", str(seed), *where, *tls), 2, "PERMISSION_DENIED")
    refused(cli("seed", str(seed), *where, *tls, "--token-file", str(tmp_path / "none")), 2, "token")

    summary = ok(cli("seed", str(seed), *where, *tls, "--token-file", str(token_file)))
    assert "1 warehouse" in summary, summary
    inventory = ["--inventory", mesh.address("inventory"), *tls, "--token", ADMIN_TOKEN]
    level = as_json(cli("stock", "get", "WH-SEED", "SKU-SEED", *inventory, "-o", "json"))["stock"]
    assert (level["onHand"], level["locked"] if "locked" in level else "0") == ("25", "0")
    # The environment works as for every other command.
    env = {
        "INVSAGA_WAREHOUSE_ADDR": mesh.address("warehouse"),
        "INVSAGA_INVENTORY_ADDR": mesh.address("inventory"),
        "INVSAGA_TLS_CA": str(certs / "ca.pem"),
        "INVSAGA_TLS_CERT": str(certs / f"{CLIENT}.pem"),
        "INVSAGA_TLS_KEY": str(certs / f"{CLIENT}-key.pem"),
        "INVSAGA_TOKEN_FILE": str(token_file),
    }
    ok(cli("seed", str(seed), env=env))
    books_by_cli({**env, **addresses(mesh)}, "--token", ADMIN_TOKEN)
