"""The ``invsaga`` command: run the mesh, seed it, start and follow sagas, measure it."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

from invsaga.runtime.config import DEFAULT_PORTS, SERVICES

DEMO_DATA = Path(__file__).resolve().parent / "demo_data.yaml"


def cmd_up(args: argparse.Namespace) -> int:
    from invsaga.launcher import LaunchError, Mesh
    from invsaga.seed import seed_file

    ports = {service: args.port_base + i for i, service in enumerate(SERVICES)}
    mesh = Mesh(ports=ports, database_url=args.database_url, data_dir=args.data_dir, log_dir=args.log_dir)
    try:
        mesh.start()
    except LaunchError as err:
        print(f"invsaga up: {err}", file=sys.stderr)
        return 1
    try:
        where = (
            f"embedded PostgreSQL in {Path(args.data_dir) / 'postgres'}"
            if mesh.embedded
            else "PostgreSQL at the given URL"
        )
        print(f"  {'database':<12} {where}")
        for service in SERVICES:
            print(
                f"  {service:<12} grpc://{mesh.address(service)}  metrics http://127.0.0.1:{mesh.ports[service] + 1000}/metrics"
            )
        if not args.no_demo_data:
            if asyncio.run(_has_warehouses(mesh.address("warehouse"))):
                # A restart keeps what the last run changed (stock picked, set, adjusted).
                print("demo data: kept (the database already holds warehouses; seeded on the first start only)")
            else:
                summary = asyncio.run(seed_file(DEMO_DATA, mesh.address("warehouse"), mesh.address("inventory")))
                print(f"demo data: {summary}")
        print(f"logs in {args.log_dir}; Ctrl-C stops all six processes", flush=True)
        stopped = {"flag": False}

        def _stop(*_: object) -> None:
            stopped["flag"] = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        while not stopped["flag"]:
            for service, proc in list(mesh.procs.items()):
                if proc.poll() is not None:
                    print(f"invsaga up: {service} exited with status {proc.returncode}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        codes = mesh.stop()
        print("stopped: " + ", ".join(f"{s}={c}" for s, c in codes.items()))


async def _has_warehouses(address: str) -> bool:
    from invsaga.runtime.channels import open_channel
    from invsaga.warehouse.v1 import warehouse_pb2, warehouse_pb2_grpc

    async with open_channel(address) as channel:
        stub = warehouse_pb2_grpc.WarehouseServiceStub(channel)
        reply = await stub.ListWarehouses(warehouse_pb2.ListWarehousesRequest(page_size=1), timeout=30)
    return bool(reply.warehouses)


def cmd_migrate(args: argparse.Namespace) -> int:
    from invsaga.migrations import migrate_all

    asyncio.run(migrate_all(args.database_url, args.service or SERVICES, data_dir=args.data_dir))
    print("schemas up to date: " + ", ".join(args.service or SERVICES))
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from invsaga.seed import SeedError, seed_file

    try:
        summary = asyncio.run(seed_file(Path(args.file), args.warehouse, args.inventory))
    except SeedError as err:
        print(f"invsaga seed: {err}", file=sys.stderr)
        return 2
    print(summary)
    return 0


def _bench_args(parser: argparse.ArgumentParser) -> None:
    from invsaga.bench import add_arguments

    add_arguments(parser)


def cmd_bench(args: argparse.Namespace) -> int:
    from invsaga.bench import bench

    from invsaga.runtime.server import asyncio_run

    return asyncio_run(bench(args))


def _client_command(name: str, module: str = "client_cli"):
    def run(args: argparse.Namespace) -> int:
        import importlib

        from invsaga import client_cli

        try:
            return asyncio.run(getattr(importlib.import_module(f"invsaga.{module}"), name)(args))
        except client_cli.UsageError as err:
            print(f"invsaga {args.command}: {err}", file=sys.stderr)
            return 2

    return run


def _module_command(parser: argparse.ArgumentParser, module_name: str, call) -> None:
    """Arguments from ``module.add_arguments``; ``call(module, args)`` runs the command."""
    import importlib

    module = importlib.import_module(module_name)
    module.add_arguments(parser)
    parser.set_defaults(func=lambda args: call(module, args))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("invsaga")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"


def _connection(parser: argparse.ArgumentParser) -> None:
    from invsaga.client_cli import connection_arguments

    connection_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="invsaga", description=__doc__)
    parser.add_argument("--version", action="version", version=f"invsaga {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the six processes (embedded PostgreSQL under ./data, demo data seeded)")
    up.add_argument(
        "--database-url", help="postgresql+psycopg://... for all six (default: an embedded server in DATA_DIR/postgres)"
    )
    up.add_argument(
        "--data-dir", default="./data", help="data directory (the embedded server lives in DATA_DIR/postgres)"
    )
    up.add_argument(
        "--port-base",
        type=int,
        default=DEFAULT_PORTS["coordinator"],
        help="gRPC ports PORT_BASE..PORT_BASE+5 in SPEC order, metrics 1000 above (default 50050)",
    )
    up.add_argument("--log-dir", default="./data/logs")
    up.add_argument("--no-demo-data", action="store_true")
    up.set_defaults(func=cmd_up)

    mig = sub.add_parser("migrate", help="bring every service's schema up to date and exit")
    mig.add_argument("--database-url", default=None, help="default: $INVSAGA_DATABASE_URL or the embedded server")
    mig.add_argument("--data-dir", default=None)
    mig.add_argument("--service", action="append", choices=SERVICES)
    mig.set_defaults(func=cmd_migrate)

    seed = sub.add_parser("seed", help="upsert warehouses and stock from a YAML file")
    seed.add_argument("file")
    seed.add_argument("--warehouse", default=f"localhost:{DEFAULT_PORTS['warehouse']}")
    seed.add_argument("--inventory", default=f"localhost:{DEFAULT_PORTS['inventory']}")
    seed.set_defaults(func=cmd_seed)

    start = sub.add_parser("start", help="start a saga from a YAML/JSON InventoryRequest")
    start.add_argument("file")
    start.add_argument("--watch", action="store_true", help="follow its progress until it ends")
    _connection(start)
    start.set_defaults(func=_client_command("start"))

    transfer = sub.add_parser("transfer", help="move stock between warehouses from a YAML/JSON TransferRequest")
    transfer.add_argument("file")
    transfer.add_argument("--watch", action="store_true", help="follow its saga until it ends")
    _connection(transfer)
    transfer.set_defaults(func=_client_command("transfer", "transfer_cli"))

    receive = sub.add_parser("receive", help="book what arrived of a shipped transfer at its destination")
    receive.add_argument("transfer_id")
    receive.add_argument("lines", nargs="*", metavar="SKU=QUANTITY", help="what arrived (a SKU not named: 0)")
    _connection(receive)
    receive.set_defaults(func=_client_command("receive", "transfer_cli"))

    watch = sub.add_parser("watch", help="live step-by-step progress of a saga")
    watch.add_argument("saga_id")
    _connection(watch)
    watch.set_defaults(func=_client_command("watch"))

    get = sub.add_parser("get", help="show a saga")
    get.add_argument("saga_id")
    _connection(get)
    get.set_defaults(func=_client_command("get"))

    lst = sub.add_parser("list", help="list sagas")
    lst.add_argument("--status", help="PENDING, RUNNING, COMPENSATING, COMPLETED, COMPENSATED or FAILED")
    lst.add_argument("--limit", type=int, default=50)
    _connection(lst)
    lst.set_defaults(func=_client_command("list_sagas"))

    cancel = sub.add_parser(
        "cancel", help="cancel a running saga, or release a COMPLETED saga's reservation (docs/lifecycle.md)"
    )
    cancel.add_argument("saga_id")
    cancel.add_argument("--reason", default="", help="why (kept in the saga and told to the customer)")
    cancel.add_argument(
        "--release-unpicked",
        action="store_true",
        help="when picking has started: release only the warehouses no picker has touched",
    )
    _connection(cancel)
    cancel.set_defaults(func=_client_command("cancel"))

    resume = sub.add_parser("resume", help="retry a FAILED saga's compensation")
    resume.add_argument("saga_id")
    _connection(resume)
    resume.set_defaults(func=_client_command("resume"))

    extend = sub.add_parser("extend", help="push a reservation's expiry out (before picking starts)")
    extend.add_argument("saga_id")
    extend.add_argument(
        "--until", required=True, help="a time with its zone (2026-12-24T18:00:00Z) or a duration from now (2h)"
    )
    _connection(extend)
    extend.set_defaults(func=_client_command("extend"))

    from invsaga import top as top_command

    top = sub.add_parser("top", help="live summary of a coordinator: throughput, outcomes, sagas in flight")
    top_command.add_arguments(top)
    top.set_defaults(func=top_command.top)

    bench = sub.add_parser("bench", help="measure sagas/s and latency of a fresh mesh against a raw gRPC baseline")
    _bench_args(bench)
    bench.set_defaults(func=cmd_bench)

    demo = sub.add_parser("demo", help="start a mesh, run the scenarios, print their outcomes")
    demo.add_argument("--database-url", default=None)
    demo.set_defaults(func=_client_command("demo"))

    certs = sub.add_parser("certs", help="make a development CA and a TLS certificate per process")
    _module_command(certs, "invsaga.certs", lambda module, args: module.run(args))

    soak = sub.add_parser("soak", help="steady load with faults; errors, latency drift and memory over time")
    _module_command(soak, "invsaga.soak", lambda module, args: asyncio.run(module.soak(args)))
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(args.func(args))


if __name__ == "__main__":
    main()
