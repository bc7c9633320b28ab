"""Where a client connects and as whom, and a request from a plain mapping: the rules the
``invsaga`` command and the client library share. An argument (a flag) wins, else the
environment: ``INVSAGA_<SERVICE>_ADDR``, ``INVSAGA_TOKEN`` / ``INVSAGA_TOKEN_FILE``,
``INVSAGA_TLS_CA`` / ``_CERT`` / ``_KEY``; else localhost on the service's port, plaintext,
no token."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.config import DEFAULT_PORTS


class UsageError(Exception):
    """Bad input from the caller (a flag, a setting, a file): the ``invsaga`` command prints it
    as one line with exit status 2; the library raises it as INVALID_ARGUMENT."""


def address_variable(service: str) -> str:
    return f"INVSAGA_{service.upper()}_ADDR"


def target(address: str | None, service: str) -> str:
    """``address``, else $INVSAGA_<SERVICE>_ADDR, else the service's port on localhost."""
    return address or os.environ.get(address_variable(service)) or f"localhost:{DEFAULT_PORTS[service]}"


def read_token(path: str, where: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(
            f"{where}: cannot read the token file {path!r}: {getattr(err, 'strerror', None) or err}"
        ) from None
    if not token:
        raise UsageError(f"{where}: the token file {path!r} is empty")
    return token


def bearer_token(token: str | None, token_file: str | None, *, file_flag: str = "--token-file") -> str:
    """``token``, else ``token_file``, else $INVSAGA_TOKEN, else $INVSAGA_TOKEN_FILE; empty: no token."""
    if token:
        return token
    if token_file:
        return read_token(token_file, file_flag)
    if os.environ.get("INVSAGA_TOKEN"):
        return os.environ["INVSAGA_TOKEN"]
    if os.environ.get("INVSAGA_TOKEN_FILE"):
        return read_token(os.environ["INVSAGA_TOKEN_FILE"], "INVSAGA_TOKEN_FILE")
    return ""


def tls_credentials(ca: str | None, cert: str | None, key: str | None) -> grpc.ChannelCredentials | None:
    """TLS credentials from the files given, else $INVSAGA_TLS_*; None for plaintext."""
    ca, cert, key = (
        value or os.environ.get(f"INVSAGA_TLS_{name}", "") for value, name in ((ca, "CA"), (cert, "CERT"), (key, "KEY"))
    )
    if not (ca or cert or key):
        return None
    if bool(cert) != bool(key):
        raise UsageError("--tls-cert and --tls-key go together (a client certificate needs its key)")
    try:
        read = {
            name: Path(path).read_bytes() if path else None for name, path in (("ca", ca), ("cert", cert), ("key", key))
        }
    except OSError as err:
        raise UsageError(f"cannot read a TLS file: {err.filename}: {err.strerror}") from None
    return grpc.ssl_channel_credentials(
        root_certificates=read["ca"], private_key=read["key"], certificate_chain=read["cert"]
    )


_ENUM_PREFIX = {"allocation_strategy": "ALLOCATION_STRATEGY_", "request_type": "REQUEST_TYPE_"}


def request_from_dict(data: dict[str, Any]) -> pb.InventoryRequest:
    """An InventoryRequest from YAML/JSON; enum values may be short (``priority`` → ALLOCATION_STRATEGY_PRIORITY)."""
    data = dict(data.get("request", data))
    for key, prefix in _ENUM_PREFIX.items():
        value = data.get(key)
        if isinstance(value, str) and not value.upper().startswith(prefix):
            data[key] = prefix + value.upper()
    expired_at = data.get("expired_at")
    if isinstance(expired_at, datetime):  # what YAML makes of an unquoted time
        if expired_at.tzinfo is None:
            raise ValueError(f"expired_at: {expired_at.isoformat()} has no time zone (add Z or +00:00)")
        data["expired_at"] = expired_at.isoformat()
    elif expired_at is not None and not isinstance(expired_at, str):
        data["expired_at"] = str(expired_at)
    return json_format.ParseDict(data, pb.InventoryRequest())
