"""How the ``invsaga`` commands print: tables for people, JSON or YAML for scripts.

``-o json`` prints the RPC's answer in the proto3 JSON mapping (``google.protobuf.json_format``:
the proto's JSON field names, enum values by name, 64-bit integers as strings), with whole ids.
Tables show times in local time with their zone, enum values without their prefix, and saga
ids shortened to a prefix on a terminal only (``get``, ``watch``, ``cancel``, ... take a
unique prefix); piped, every id is whole.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timezone
from typing import Any, Iterable, Sequence

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "json", "yaml")
SHORT_ID = 12  # characters of a saga id shown in a table on a terminal


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default="table",
        help="table (for people), json or yaml (for scripts: the RPC's answer in the proto3 JSON mapping)",
    )


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def console() -> Console:
    """A console on stdout; piped, as wide as a row needs (no cut or wrapped ids)."""
    if stdout_is_terminal():
        return Console()
    return Console(width=10_000, no_color=True, highlight=False, soft_wrap=True)


def emit(message: Message, fmt: str) -> None:
    """``message`` as one JSON document (one line) or one YAML document."""
    data = json_format.MessageToDict(message)
    if fmt == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:
        sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def emit_stream_item(message: Message, fmt: str) -> None:
    """One item of a stream: a JSON line, or a YAML document of its own."""
    if fmt == "yaml":
        sys.stdout.write("---\n")
    emit(message, fmt)


def local_time(ts: Timestamp, *, present: bool = True) -> str:
    """``2026-12-04 16:05:09 CET``: local time with its zone; empty when unset."""
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return ""
    when = ts.ToDatetime(tzinfo=timezone.utc).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S %Z")


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """An enum value without its prefix (``LOCK_STATUS_HELD`` -> ``HELD``); empty for 0."""
    if not value:
        return ""
    try:
        return str(enum.Name(value)).removeprefix(prefix)
    except ValueError:
        return str(value)


def saga_id_cell(saga_id: str) -> str:
    """Whole when piped; a prefix on a terminal (the commands take a unique prefix)."""
    if stdout_is_terminal() and len(saga_id) > SHORT_ID:
        return saga_id[:SHORT_ID]
    return saga_id


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table on stdout whose id columns (named ``*id``) are never wrapped or cut."""
    out = Table()
    for column in columns:
        if column.endswith("id") or column in ("saga", "sku", "warehouse"):
            out.add_column(column, no_wrap=True, overflow="ignore")
        else:
            out.add_column(column)
    for row in rows:
        out.add_row(*("" if cell is None else str(cell) for cell in row))
    console().print(out)


def note(text: str) -> None:
    """A remark for people (more pages, what was done) on stderr, so stdout stays data."""
    print(text, file=sys.stderr, flush=True)
