# PYTHON_ARGCOMPLETE_OK  (shell completion: `invsaga completion bash`, see the README)
"""The ``invsaga`` command: run the mesh, seed it, start and follow sagas, operate the services, measure it."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from invsaga.runtime.config import DEFAULT_PORTS, SERVICES


def cmd_up(args: argparse.Namespace) -> int:
    from invsaga.up import up

    return up(
        data_dir=args.data_dir,
        database_url=args.database_url,
        base_port=args.base_port,
        random=args.random_ports,
        log_dir=args.log_dir,
        demo_data=not args.no_demo_data,
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    from invsaga.migrations import migrate_all

    asyncio.run(migrate_all(args.database_url, args.service or SERVICES, data_dir=args.data_dir))
    print("schemas up to date: " + ", ".join(args.service or SERVICES))
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from invsaga.client_cli import UsageError, connector_of, target_of
    from invsaga.seed import SeedError, seed_file

    try:
        connect = connector_of(args)
        summary = asyncio.run(
            seed_file(Path(args.file), target_of(args, "warehouse"), target_of(args, "inventory"), connect)
        )
    except (SeedError, UsageError) as err:
        print(f"invsaga seed: {err}", file=sys.stderr)
        return 2
    print(summary)
    return 0


def _client_command(name: str, module: str = "client_cli"):
    def run(args: argparse.Namespace) -> int:
        import importlib

        from invsaga import client_cli

        return client_cli.run_command(args, getattr(importlib.import_module(f"invsaga.{module}"), name))

    return run


class _Parser(argparse.ArgumentParser):
    """Bad command-line input: one line on stderr and exit status 2, no usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    sys.stdout.write(argcomplete.shellcode(["invsaga"], shell=args.shell))
    return 0


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


SAGA_ID_HELP = "the saga's id, or a unique prefix of it"


def _saga_command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command of ``invsaga.client_cli`` on one saga: its SAGA_ID; its flags and then
    ``connection_arguments`` are the caller's to add."""
    parser = sub.add_parser(name, help=help_text)
    parser.add_argument("saga_id", metavar="SAGA_ID", help=SAGA_ID_HELP)
    parser.set_defaults(func=_client_command(name))
    return parser


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole ``invsaga`` parser; ``argv`` (default: this process's) says which heavy command to fill in."""
    from invsaga.client_cli import (
        RESERVATION_STATES,
        SAGA_STATUSES,
        address_argument,
        connection_arguments,
        credential_arguments,
        enum_flag,
        paging_arguments,
    )

    parser = _Parser(prog="invsaga", description=__doc__)
    parser.add_argument("--version", action="version", version=f"invsaga {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the six processes (embedded PostgreSQL under ./data, demo data seeded)")
    up.add_argument(
        "--database-url", help="postgresql+psycopg://... for all six (default: an embedded server in DATA_DIR/postgres)"
    )
    up.add_argument(
        "--data-dir", default="./data", help="data directory (the embedded server lives in DATA_DIR/postgres)"
    )
    ports = up.add_mutually_exclusive_group()
    ports.add_argument(
        "--base-port",
        "--port-base",
        type=int,
        default=None,
        metavar="N",
        help=f"gRPC ports N..N+5 in SPEC order, metrics 1000 above (default {DEFAULT_PORTS['coordinator']})",
    )
    ports.add_argument(
        "--random-ports", action="store_true", help="free ports picked at start (the addresses are printed)"
    )
    up.add_argument("--log-dir", default=None, help="one log file per process (default DATA_DIR/logs)")
    up.add_argument("--no-demo-data", action="store_true", help="do not seed the demo data into an empty database")
    up.set_defaults(func=cmd_up)

    mig = sub.add_parser("migrate", help="bring every service's schema up to date and exit")
    mig.add_argument("--database-url", default=None, help="default: $INVSAGA_DATABASE_URL or the embedded server")
    mig.add_argument(
        "--data-dir", default=None, help="where the embedded server lives when no URL is given (default: ./data)"
    )
    mig.add_argument("--service", action="append", choices=SERVICES, help="only this service's schema (repeat)")
    mig.set_defaults(func=cmd_migrate)

    seed = sub.add_parser("seed", help="upsert warehouses and stock from a YAML file")
    seed.add_argument("file", help="the warehouses and stock levels (SPEC §8 format; invsaga/demo_data.yaml)")
    address_argument(seed, "warehouse")
    address_argument(seed, "inventory")
    credential_arguments(seed)  # an operator's token (admin role) and the TLS files of a secured mesh
    seed.set_defaults(func=cmd_seed)

    start = sub.add_parser("start", help="start a saga from a YAML/JSON InventoryRequest (prints its id)")
    start.add_argument("file", help="the InventoryRequest: YAML, or JSON for a .json file (examples/order.yaml)")
    start.add_argument(
        "--watch", action="store_true", help="follow its progress until it ends (exit status 1 unless COMPLETED)"
    )
    connection_arguments(start)
    start.set_defaults(func=_client_command("start"))

    transfer = sub.add_parser("transfer", help="move stock between warehouses from a YAML/JSON TransferRequest")
    transfer.add_argument("file", help="a YAML or JSON TransferRequest (from_warehouse, to_warehouse, items, ...)")
    transfer.add_argument("--watch", action="store_true", help="follow its saga until it ends")
    connection_arguments(transfer)
    transfer.set_defaults(func=_client_command("transfer", "transfer_cli"))

    receive = sub.add_parser("receive", help="book what arrived of a shipped transfer at its destination")
    receive.add_argument("transfer_id", help="the transfer's saga id")
    receive.add_argument("lines", nargs="*", metavar="SKU=QUANTITY", help="what arrived (a SKU not named: 0)")
    connection_arguments(receive)
    receive.set_defaults(func=_client_command("receive", "transfer_cli"))

    watch = _saga_command(sub, "watch", "live step-by-step progress of a saga (-o json: a JSON line per event)")
    watch.add_argument(
        "--reservation",
        action="store_true",
        help="after a COMPLETED saga, keep following its reservation until it is fulfilled, released or expired",
    )
    connection_arguments(watch)
    connection_arguments(_saga_command(sub, "get", "show a saga"))

    lst = sub.add_parser("list", help="list sagas, newest first")
    enum_flag(lst, "--status", SAGA_STATUSES, "only this status")
    lst.add_argument("--order", metavar="ORDER_ID", help="only this order's sagas")
    lst.add_argument("--customer", metavar="CUSTOMER_ID", help="only this customer's sagas")
    enum_flag(lst, "--reservation", RESERVATION_STATES, "only sagas whose reservation is in this state")
    lst.add_argument(
        "--since", metavar="TIME", help="created at or after: a time with its zone, or a duration ago (2h)"
    )
    lst.add_argument("--before", metavar="TIME", help="created before: a time with its zone, or a duration ago (2h)")
    paging_arguments(lst, "sagas")
    connection_arguments(lst)
    lst.set_defaults(func=_client_command("list_sagas"))

    cancel = _saga_command(
        sub, "cancel", "cancel a running saga, or release a COMPLETED saga's reservation (docs/lifecycle.md)"
    )
    cancel.add_argument("--reason", default="", help="why (kept in the saga and told to the customer)")
    cancel.add_argument(
        "--release-unpicked",
        action="store_true",
        help="when picking has started: release only the warehouses no picker has touched",
    )
    connection_arguments(cancel)
    connection_arguments(_saga_command(sub, "resume", "retry a FAILED saga's compensation"))

    extend = _saga_command(sub, "extend", "push a reservation's expiry out (before picking starts)")
    extend.add_argument(
        "--until", required=True, help="a time with its zone (2026-12-24T18:00:00Z) or a duration from now (2h)"
    )
    connection_arguments(extend)

    from invsaga.cli_admin_args import add_commands

    add_commands(sub)

    completion = sub.add_parser(
        "completion", help='print the shell completion script: eval "$(invsaga completion bash)" in ~/.bashrc'
    )
    completion.add_argument(
        "shell", nargs="?", default="bash", choices=("bash", "zsh", "fish", "tcsh"), help="the shell (default bash)"
    )
    completion.set_defaults(func=cmd_completion)

    # These import much (the mesh launcher, the database layer): their arguments are added only
    # when the command line names them, so every other command (and completion) starts fast.
    chosen = _chosen_command(argv)

    top = sub.add_parser("top", help="live summary of a coordinator: throughput, outcomes, sagas in flight")
    if chosen == "top":
        _module_command(top, "invsaga.top", lambda module, args: module.top(args))

    bench = sub.add_parser("bench", help="measure sagas/s and latency of a fresh mesh against a raw gRPC baseline")
    if chosen == "bench":
        from invsaga.runtime.server import asyncio_run

        _module_command(bench, "invsaga.bench", lambda module, args: asyncio_run(module.bench(args)))

    demo = sub.add_parser("demo", help="start a mesh, run the scenarios, print their outcomes")
    demo.add_argument("--database-url", default=None, help="PostgreSQL for the demo mesh (default: an embedded server)")
    demo.set_defaults(func=_client_command("demo"))

    certs = sub.add_parser("certs", help="make a development CA and a TLS certificate per process")
    if chosen == "certs":
        _module_command(certs, "invsaga.certs", lambda module, args: module.run(args))

    soak = sub.add_parser("soak", help="steady load with faults; errors, latency drift and memory over time")
    if chosen == "soak":
        _module_command(soak, "invsaga.soak", lambda module, args: asyncio.run(module.soak(args)))
    return parser


def _chosen_command(argv: Sequence[str] | None) -> str | None:
    """The command a command line names (its first word that is no option), also while completing."""
    import shlex

    if os.environ.get("_ARGCOMPLETE") and os.environ.get("COMP_LINE"):
        try:
            words = shlex.split(os.environ["COMP_LINE"])[1:]
        except ValueError:
            words = os.environ["COMP_LINE"].split()[1:]
    else:
        words = list(sys.argv[1:] if argv is None else argv)
    return next((word for word in words if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser(argv)
    try:
        import argcomplete
    except ImportError:  # an install without it: everything but completion works
        pass
    else:
        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    try:
        raise SystemExit(args.func(args))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
