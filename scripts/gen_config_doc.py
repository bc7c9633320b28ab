"""Write docs/configuration.md from ``ENV_VARS`` in invsaga/runtime/config.py.

    python scripts/gen_config_doc.py            # rewrite docs/configuration.md
    python scripts/gen_config_doc.py --check    # exit 1 if it is out of date

Each variable's default is what a process gets with the variable unset and the stock
config/invsaga.yaml (``load_settings`` with an empty environment); "read by" says which of the
six processes act on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from invsaga.runtime.config import ENV_VARS, SERVICES, STEP_NAMES, Settings, load_settings  # noqa: E402

DOC = ROOT / "docs" / "configuration.md"
COMMAND = "python scripts/gen_config_doc.py"

ALL = "all six"
PARTICIPANTS = "the five participants"
COORDINATOR_ONLY = {
    "INVSAGA_SAGA_TIMEOUT",
    "INVSAGA_RETRY_MAX_ATTEMPTS",
    "INVSAGA_RETRY_INITIAL_INTERVAL",
    "INVSAGA_RETRY_MAX_INTERVAL",
    "INVSAGA_COMPENSATION_TIMEOUT",
    "INVSAGA_COMPENSATION_RETRY_ATTEMPTS",
    "INVSAGA_MAX_CONCURRENT_SAGAS",
    "INVSAGA_LEASE",
    "INVSAGA_RECOVERY_INTERVAL",
    "INVSAGA_SERVICE_TOKEN",
    "INVSAGA_MAX_START_SAGA_BYTES",
    "INVSAGA_JOURNAL_SAGAS",
    "INVSAGA_JOURNAL_BYTES",
    "INVSAGA_JOURNAL_LINGER",
    "INVSAGA_MAX_SAGA_BYTES",
    "INVSAGA_STEP_TRANSPORT",
    "INVSAGA_RESERVATION_SWEEP_INTERVAL",
    "INVSAGA_RESERVATION_MAX_EXTENSION",
    *(f"INVSAGA_STEP_{step.upper()}_TIMEOUT" for step in STEP_NAMES),
}
READERS: dict[str, str] = {
    **{name: "coordinator" for name in COORDINATOR_ONLY},
    "INVSAGA_EXPIRY_ALLOCATION": "coordinator, allocation",
    "INVSAGA_EXPIRY_LOCK": "coordinator, inventory",
    "INVSAGA_EXPIRY_CLEANUP_INTERVAL": "none (listed; no process acts on it yet)",
    **{f"INVSAGA_{name.upper()}_ADDR": "coordinator, `invsaga` client commands" for name in SERVICES},
    "INVSAGA_COORDINATOR_ADDR": "`invsaga` client commands",
    "INVSAGA_WEBHOOKS": "notify",
    "INVSAGA_WEBHOOK_SECRET": "notify",
    "INVSAGA_MAX_STEP_REQUEST_BYTES": PARTICIPANTS,
    "INVSAGA_DATABASE_URL": f"{ALL}, `invsaga migrate`",
    "INVSAGA_DATA_DIR": f"{ALL}, `invsaga migrate`",
}

# Defaults that are not one value of Settings, or read elsewhere.
FIXED: dict[str, str] = {
    "INVSAGA_CONFIG": "config/invsaga.yaml of the installation",
    "INVSAGA_HOST": "0.0.0.0 (`invsaga up`: 127.0.0.1)",
    "INVSAGA_PORT": "50050 … 50055, in the order " + ", ".join(SERVICES),
    "INVSAGA_DATABASE_URL": "unset: the embedded PostgreSQL in DATA_DIR/postgres",
    "INVSAGA_METRICS_PORT": "gRPC port + 1000",
    "INVSAGA_TRACE_FILE": "unset (tracing off)",
    "INVSAGA_AUTH": "unset: every RPC but health and reflection refused (`invsaga up`: off)",
    "INVSAGA_DB_POOL_SIZE": "6 (coordinator 10)",
    "INVSAGA_EXPIRY_CLEANUP_INTERVAL": "5m (not read)",
}


def _endpoint(service: str) -> Callable[[Settings], Any]:
    return lambda s: s.endpoint(service)


def _step_timeout(step: str) -> Callable[[Settings], Any]:
    return lambda s: s.step_timeout(step)


SETTING: dict[str, Callable[[Settings], Any]] = {
    "INVSAGA_GRACE_PERIOD": lambda s: s.grace_period,
    "INVSAGA_MAX_CONNECTION_AGE": lambda s: s.max_connection_age,
    "INVSAGA_LOG_LEVEL": lambda s: s.log_level,
    "INVSAGA_LOG_FORMAT": lambda s: s.log_format,
    "INVSAGA_DATA_DIR": lambda s: s.data_dir,
    "INVSAGA_SAGA_TIMEOUT": lambda s: s.saga.timeout,
    "INVSAGA_RETRY_MAX_ATTEMPTS": lambda s: s.saga.retry.max_attempts,
    "INVSAGA_RETRY_INITIAL_INTERVAL": lambda s: s.saga.retry.initial_interval,
    "INVSAGA_RETRY_MAX_INTERVAL": lambda s: s.saga.retry.max_interval,
    "INVSAGA_COMPENSATION_TIMEOUT": lambda s: s.saga.compensation.timeout,
    "INVSAGA_COMPENSATION_RETRY_ATTEMPTS": lambda s: s.saga.compensation.retry_attempts,
    "INVSAGA_EXPIRY_ALLOCATION": lambda s: s.saga.expiry.allocation,
    "INVSAGA_EXPIRY_LOCK": lambda s: s.saga.expiry.lock,
    "INVSAGA_MAX_CONCURRENT_SAGAS": lambda s: s.max_concurrent_sagas,
    "INVSAGA_LEASE": lambda s: s.lease,
    "INVSAGA_RECOVERY_INTERVAL": lambda s: s.recovery_interval,
    "INVSAGA_WEBHOOKS": lambda s: ",".join(s.webhooks),
    "INVSAGA_WEBHOOK_SECRET": lambda s: s.webhook_secret,
    "INVSAGA_FAULTS": lambda s: s.fault_injection,
    "INVSAGA_TLS_CERT": lambda s: s.tls_cert,
    "INVSAGA_TLS_KEY": lambda s: s.tls_key,
    "INVSAGA_TLS_CA": lambda s: s.tls_ca,
    "INVSAGA_TLS_CLIENT_AUTH": lambda s: "require" if s.tls_client_auth else "none",
    "INVSAGA_TLS_ROLES": lambda s: ",".join(":".join(r) for r in s.tls_roles),
    "INVSAGA_AUTH_TOKENS": lambda s: "",
    "INVSAGA_AUTH_TOKEN_HASHES": lambda s: "",
    "INVSAGA_SERVICE_TOKEN": lambda s: s.service_token,
    "INVSAGA_REQUIRE_AUTH": lambda s: "true" if s.require_auth else "false",
    "INVSAGA_HEALTH_PORT": lambda s: s.health_port or "",
    "INVSAGA_MAX_START_SAGA_BYTES": lambda s: s.max_start_saga_bytes,
    "INVSAGA_MAX_REQUEST_BYTES": lambda s: s.max_request_bytes,
    "INVSAGA_MAX_STEP_REQUEST_BYTES": lambda s: s.max_step_request_bytes,
    "INVSAGA_MAX_INFLIGHT_REQUEST_BYTES": lambda s: s.max_inflight_request_bytes,
    "INVSAGA_MAX_METADATA_BYTES": lambda s: s.max_metadata_bytes,
    "INVSAGA_MAX_METADATA_DEPTH": lambda s: s.max_metadata_depth,
    "INVSAGA_DB_IDLE_TIMEOUT": lambda s: s.db_idle_timeout,
    "INVSAGA_JOURNAL_SAGAS": lambda s: s.journal_sagas,
    "INVSAGA_JOURNAL_BYTES": lambda s: s.journal_bytes,
    "INVSAGA_JOURNAL_LINGER": lambda s: s.journal_linger,
    "INVSAGA_MAX_SAGA_BYTES": lambda s: s.max_saga_bytes,
    "INVSAGA_STEP_TRANSPORT": lambda s: s.step_transport,
    "INVSAGA_RESERVATION_SWEEP_INTERVAL": lambda s: s.reservation_sweep_interval,
    "INVSAGA_RESERVATION_MAX_EXTENSION": lambda s: s.reservation_max_extension,
    **{f"INVSAGA_{n.upper()}_ADDR": _endpoint(n) for n in SERVICES},
    **{f"INVSAGA_STEP_{t.upper()}_TIMEOUT": _step_timeout(t) for t in STEP_NAMES},
}
DURATION_WORDS = ("TIMEOUT", "INTERVAL", "PERIOD", "AGE", "LEASE", "LINGER", "EXTENSION", "EXPIRY")


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


def _bytes(number: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if number >= size and number % size == 0:
            return f"{number // size}{unit}"
    return str(number)


def default(name: str, settings: Settings) -> str:
    if name in FIXED:
        return FIXED[name]
    getter = SETTING.get(name)
    if getter is None:
        return "—"
    value = getter(settings)
    if value in ("", None):
        return "unset"
    if isinstance(value, float) and any(word in name for word in DURATION_WORDS):
        return _duration(value)
    if isinstance(value, int) and name.endswith("_BYTES"):
        return _bytes(value)
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    settings = {service: load_settings(service, env={}) for service in SERVICES}
    lines = [
        "# Configuration",
        "",
        f"<!-- Generated from ENV_VARS in invsaga/runtime/config.py by `{COMMAND}`; do not edit. -->",
        "",
        "Every setting a process reads from its environment. A process reads config/invsaga.yaml",
        "(or the file `INVSAGA_CONFIG` names) first; a variable that is set overrides the file.",
        "The defaults below are what a process gets with the variable unset and the stock file.",
        "Durations take `500ms`, `30s`, `5m`, `1h`; sizes `65536`, `64KiB`, `1MiB`. A bad value stops",
        "the process at start with a message naming the variable.",
        "",
        "| Variable | Default | Read by | Description |",
        "| --- | --- | --- | --- |",
    ]
    for name, description in ENV_VARS.items():
        readers = READERS.get(name, ALL)
        reader = readers.split(",")[0].strip()  # the defaults of the first process named
        value = default(name, settings[reader if reader in settings else "coordinator"])
        lines.append(f"| `{name}` | {_cell(value)} | {_cell(readers)} | {_cell(description)} |")
    lines += [
        "",
        "OpenTelemetry's own `OTEL_*` variables (`OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_OTLP_ENDPOINT`, ...)",
        "turn tracing on and configure it as well: see invsaga/runtime/telemetry.py.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC.relative_to(ROOT)} is out of date: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)} ({len(ENV_VARS)} variables)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
