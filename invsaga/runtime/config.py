"""Settings: read once at start from the YAML file, then environment overrides.

The YAML file has the seed's ``saga.inventory_management`` block plus an ``invsaga`` block for
the mesh itself. Every setting a process reads from its environment is listed in ``ENV_VARS``,
so that deployment manifests can be checked against it (no name drift in either direction).
A bad value fails fast with a message naming the setting and where it came from.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from invsaga.runtime.auth_settings import security_settings
from invsaga.runtime.settings_base import (
    DEFAULT_PORTS,
    METRICS_PORT_OFFSET,
    PARTICIPANTS,
    SERVICES,
    ConfigError,
    parse_choice,
    parse_bytes,
    parse_duration,
    parse_port,
    parse_positive_int,
)

STEP_NAMES: tuple[str, ...] = (
    "query_warehouses",
    "check_availability",
    "allocate_inventory",
    "lock_inventory",
    "generate_picklist",
    "notify",
)
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "invsaga.yaml"


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = 3
    initial_interval: float = 1.0
    max_interval: float = 30.0


@dataclass(frozen=True)
class CompensationConfig:
    timeout: float = 120.0
    retry_attempts: int = 3


@dataclass(frozen=True)
class ExpiryConfig:
    allocation: float = 1800.0
    lock: float = 1800.0


@dataclass(frozen=True)
class SagaConfig:
    timeout: float = 180.0
    retry: RetryConfig = RetryConfig()
    compensation: CompensationConfig = CompensationConfig()
    step_timeouts: Mapping[str, float] = field(
        default_factory=lambda: {
            "query_warehouses": 5.0,
            "check_availability": 10.0,
            "allocate_inventory": 10.0,
            "lock_inventory": 15.0,
            "generate_picklist": 10.0,
            "notify": 10.0,
        }
    )
    expiry: ExpiryConfig = ExpiryConfig()


@dataclass(frozen=True)
class Settings:
    """Everything one process needs; built once by ``load_settings``."""

    service: str
    port: int
    host: str = "0.0.0.0"
    database_url: str = ""
    metrics_port: int = 0
    grace_period: float = 10.0
    max_connection_age: float = 300.0
    log_level: str = "INFO"
    log_format: str = "json"
    data_dir: str = "./data"
    endpoints: Mapping[str, str] = field(default_factory=dict)
    saga: SagaConfig = SagaConfig()
    max_concurrent_sagas: int = 256
    lease: float = 15.0
    recovery_interval: float = 5.0
    webhooks: tuple[str, ...] = ()
    webhook_secret: str = ""
    fault_injection: str = ""
    # Security (invsaga.runtime.security, docs/security.md). ``auth_mode`` "" (nothing
    # configured) refuses every RPC but health and reflection; "off" lets every caller in.
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_client_auth: bool = False
    auth_mode: str = ""  # "" | "off" | "token" | "mtls"
    # (SHA-256 hex, role, name): name is a client's tenant or a service's process name.
    auth_tokens: tuple[tuple[str, str, str], ...] = ()
    # (certificate name, role, tenant) on top of the defaults (security.DEFAULT_TLS_ROLES).
    tls_roles: tuple[tuple[str, str, str], ...] = ()
    service_token: str = field(default="", repr=False)  # a secret: never in a repr or a log
    require_auth: bool = False
    health_port: int = 0
    # Request bounds (invsaga.runtime.inputs, applied by the server bootstrap to every call).
    max_start_saga_bytes: int = 1024 * 1024
    max_request_bytes: int = 1024 * 1024
    max_step_request_bytes: int = 8 * 1024 * 1024
    max_inflight_request_bytes: int = 32 * 1024 * 1024
    max_metadata_bytes: int = 64 * 1024
    max_metadata_depth: int = 8
    # Resources (invsaga.runtime.db pools; coordinator.hub's event journal).
    db_pool_size: int = 6  # load_settings: 10 for the coordinator (invsaga.runtime.db)
    db_idle_timeout: float = 30.0
    journal_sagas: int = 20_000
    journal_bytes: int = 64 * 1024 * 1024
    journal_linger: float = 30.0
    # The reservation after a saga (coordinator.lifecycle): how often expiries are looked for,
    # and how far ExtendReservation may push one out.
    reservation_sweep_interval: float = 1.0
    reservation_max_extension: float = 24 * 3600.0
    # coordinator.gate: the bytes admitted sagas may hold (each counted at 4x its request).
    max_saga_bytes: int = 32 * 1024 * 1024
    # coordinator.participants: how Execute calls travel ("stream": messages on ExecuteStream;
    # "unary": one Execute RPC each). Both pass the same client interceptors.
    step_transport: str = "stream"

    def endpoint(self, service: str) -> str:
        return self.endpoints.get(service, f"localhost:{DEFAULT_PORTS[service]}")

    def step_timeout(self, step: str) -> float:
        return self.saga.step_timeouts.get(step, 10.0)


# Environment variable -> what it sets. The single list of what processes read.
ENV_VARS: dict[str, str] = {
    "INVSAGA_CONFIG": "path of the YAML configuration file",
    "INVSAGA_HOST": "address the gRPC server binds",
    "INVSAGA_PORT": "gRPC port of this process",
    "INVSAGA_DATABASE_URL": "postgresql+psycopg:// URL of this process's database (none: the embedded server)",
    "INVSAGA_METRICS_PORT": "Prometheus /metrics port (default gRPC port + 1000)",
    "INVSAGA_GRACE_PERIOD": "graceful shutdown grace period",
    "INVSAGA_MAX_CONNECTION_AGE": "clients reconnect (and re-resolve) after this long, so new pods get traffic",
    "INVSAGA_LOG_LEVEL": "log level",
    "INVSAGA_LOG_FORMAT": "json or text",
    "INVSAGA_DATA_DIR": "directory of the embedded PostgreSQL server (DATA_DIR/postgres) when no URL is given",
    "INVSAGA_SAGA_TIMEOUT": "whole-saga timeout",
    "INVSAGA_RETRY_MAX_ATTEMPTS": (
        "attempts per step at a retryable business fault; transient faults (UNAVAILABLE, an attempt's"
        " deadline) are retried until the saga's deadline"
    ),
    "INVSAGA_RETRY_INITIAL_INTERVAL": "first backoff interval",
    "INVSAGA_RETRY_MAX_INTERVAL": "backoff cap (transient faults: at most 1 s, so a restarted participant is used soon)",
    "INVSAGA_COMPENSATION_TIMEOUT": (
        "deadline of each Compensate call, its attempts together: transient faults are retried until it passes"
    ),
    "INVSAGA_COMPENSATION_RETRY_ATTEMPTS": "Compensate attempts at a business fault before the saga is parked FAILED",
    "INVSAGA_EXPIRY_ALLOCATION": "allocation time to live",
    "INVSAGA_EXPIRY_LOCK": "lock time to live",
    "INVSAGA_MAX_CONCURRENT_SAGAS": "sagas the coordinator drives at once",
    "INVSAGA_LEASE": "coordinator lease on a saga",
    "INVSAGA_RECOVERY_INTERVAL": "how often the coordinator claims orphaned sagas",
    "INVSAGA_WEBHOOKS": "comma-separated webhook URLs for notifications",
    "INVSAGA_WEBHOOK_SECRET": "HMAC-SHA256 key of the webhook signature",
    "INVSAGA_FAULTS": "fault injection spec (off when empty)",
    "INVSAGA_TRACE_FILE": "file that receives every finished span as a JSON line (tracing on when set; {service} expands)",
    "INVSAGA_TLS_CERT": "PEM certificate this process serves with and presents as a client (TLS on when set)",
    "INVSAGA_TLS_KEY": "PEM private key of INVSAGA_TLS_CERT",
    "INVSAGA_TLS_CA": "PEM CA bundle the peers' certificates are verified against",
    "INVSAGA_TLS_CLIENT_AUTH": "require (mutual TLS) or none",
    "INVSAGA_TLS_ROLES": "comma-separated name:role[:tenant] for certificate names under mTLS (the CN; a SAN only without a CN), on top of the defaults",
    "INVSAGA_AUTH": "token, mtls or off (unset with nothing configured: every RPC but health and reflection is refused)",
    "INVSAGA_AUTH_TOKENS": "comma-separated sha256hex:role[:name] bearer tokens (role admin|client|coordinator|service; name: a client's tenant, a service's process)",
    "INVSAGA_AUTH_TOKEN_HASHES": "comma-separated SHA-256 hex digests of bearer tokens accepted as client tokens without a tenant",
    "INVSAGA_SERVICE_TOKEN": "the bearer token this process presents on its own calls to the others when mTLS is off (a secret)",
    "INVSAGA_REQUIRE_AUTH": "true: refuse to start with INVSAGA_AUTH off or unset (production)",
    "INVSAGA_HEALTH_PORT": "extra plaintext port serving only grpc.health.v1 (for probes under TLS; off when unset)",
    "INVSAGA_MAX_START_SAGA_BYTES": "largest serialized StartSaga request (default 1MiB; RESOURCE_EXHAUSTED past it)",
    "INVSAGA_MAX_REQUEST_BYTES": "largest serialized request of any other RPC but the saga steps (default 1MiB)",
    "INVSAGA_MAX_STEP_REQUEST_BYTES": "largest serialized step request (Execute/Compensate/ExecuteStream; default 8MiB)",
    "INVSAGA_MAX_INFLIGHT_REQUEST_BYTES": "server-wide budget of request bytes being served (default 32MiB; RESOURCE_EXHAUSTED past it)",
    "INVSAGA_MAX_METADATA_BYTES": "largest serialized Struct in a request, e.g. a saga's metadata (default 64KiB)",
    "INVSAGA_MAX_METADATA_DEPTH": "deepest nesting of a Struct in a request, e.g. a saga's metadata (default 8)",
    "INVSAGA_DB_POOL_SIZE": "most PostgreSQL connections this process's pool opens (default 6; the coordinator 10)",
    "INVSAGA_DB_IDLE_TIMEOUT": "pooled PostgreSQL connections unused this long are closed, down to one (default 30s)",
    "INVSAGA_JOURNAL_SAGAS": "coordinator: most sagas whose events it keeps in memory for WatchSaga (default 20000)",
    "INVSAGA_JOURNAL_BYTES": "coordinator: most memory those events take, estimated (default 64MiB)",
    "INVSAGA_JOURNAL_LINGER": "coordinator: a finished saga's events stay in memory this long (default 30s)",
    "INVSAGA_STEP_TRANSPORT": "coordinator: how step calls travel, stream (ExecuteStream messages, default) or unary (one Execute RPC each)",
    "INVSAGA_MAX_SAGA_BYTES": "coordinator: memory budget of admitted sagas, each counted at 4x its request (default 32MiB; StartSaga waits, then RESOURCE_EXHAUSTED)",
    "INVSAGA_RESERVATION_SWEEP_INTERVAL": "coordinator: how often reservations past their expiry are released (default 1s)",
    "INVSAGA_RESERVATION_MAX_EXTENSION": "coordinator: ExtendReservation may push an expiry at most this far from now (default 24h)",
    **{f"INVSAGA_{name.upper()}_ADDR": f"address of the {name} service" for name in SERVICES},
    **{f"INVSAGA_STEP_{step.upper()}_TIMEOUT": f"deadline of step {step}" for step in STEP_NAMES},
}


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"INVSAGA_CONFIG: cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _section(data: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    node: Any = data
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            return {}
    if not isinstance(node, Mapping):
        raise ConfigError(f"{'.'.join(keys)}: expected a mapping")
    return dict(node)


def _saga_config(block: Mapping[str, Any], env: Mapping[str, str], src: str) -> SagaConfig:
    def pick(env_name: str, yaml_value: Any, default: Any) -> tuple[Any, str]:
        if env_name in env:
            return env[env_name], env_name
        if yaml_value is not None:
            return yaml_value, src
        return default, "default"

    base = SagaConfig()
    retry = _section(block, "retry")
    comp = _section(block, "compensation")
    expiry = _section(block, "expiry")
    steps = _section(block, "steps")

    def duration(env_name: str, yaml_value: Any, default: float, label: str) -> float:
        value, where = pick(env_name, yaml_value, default)
        return parse_duration(value, name=f"{label} ({where})")

    def count(env_name: str, yaml_value: Any, default: int, label: str) -> int:
        value, where = pick(env_name, yaml_value, default)
        return parse_positive_int(value, name=f"{label} ({where})")

    step_timeouts = {}
    for step in STEP_NAMES:
        step_block = steps.get(step) or {}
        if not isinstance(step_block, Mapping):
            raise ConfigError(f"saga.inventory_management.steps.{step}: expected a mapping ({src})")
        step_timeouts[step] = duration(
            f"INVSAGA_STEP_{step.upper()}_TIMEOUT",
            step_block.get("timeout"),
            base.step_timeouts[step],
            f"steps.{step}.timeout",
        )
    return SagaConfig(
        timeout=duration("INVSAGA_SAGA_TIMEOUT", block.get("timeout"), base.timeout, "timeout"),
        retry=RetryConfig(
            max_attempts=count("INVSAGA_RETRY_MAX_ATTEMPTS", retry.get("max_attempts"), 3, "retry.max_attempts"),
            initial_interval=duration(
                "INVSAGA_RETRY_INITIAL_INTERVAL", retry.get("initial_interval"), 1.0, "retry.initial_interval"
            ),
            max_interval=duration("INVSAGA_RETRY_MAX_INTERVAL", retry.get("max_interval"), 30.0, "retry.max_interval"),
        ),
        compensation=CompensationConfig(
            timeout=duration("INVSAGA_COMPENSATION_TIMEOUT", comp.get("timeout"), 120.0, "compensation.timeout"),
            retry_attempts=count(
                "INVSAGA_COMPENSATION_RETRY_ATTEMPTS", comp.get("retry_attempts"), 3, "compensation.retry_attempts"
            ),
        ),
        step_timeouts=step_timeouts,
        expiry=ExpiryConfig(
            allocation=duration("INVSAGA_EXPIRY_ALLOCATION", expiry.get("allocation"), 1800.0, "expiry.allocation"),
            lock=duration("INVSAGA_EXPIRY_LOCK", expiry.get("lock"), 1800.0, "expiry.lock"),
        ),
    )


def load_settings(
    service: str,
    *,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    database_url: str | None = None,
    config_path: str | None = None,
) -> Settings:
    """Build the settings of ``service``: YAML file, then environment, then explicit flags."""
    if service not in SERVICES:
        raise ConfigError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
    env = os.environ if env is None else env
    given = config_path or env.get("INVSAGA_CONFIG")
    path = Path(given or DEFAULT_CONFIG_PATH)
    # An installed package (not a checkout) has no config/ beside it: the built-in defaults,
    # which the stock file repeats, apply. A file that was asked for must exist.
    data = _load_yaml(path) if given or path.exists() else {}
    src = str(path) if given or path.exists() else "built-in defaults"
    saga = _saga_config(_section(data, "saga", "inventory_management"), env, src)
    mesh = _section(data, "invsaga")
    _section(mesh, "coordinator")  # a malformed block fails here, before the sections below
    notify = _section(mesh, "notify")

    endpoints = {name: f"localhost:{DEFAULT_PORTS[name]}" for name in SERVICES}
    for name, address in _section(mesh, "endpoints").items():
        if name not in SERVICES:
            raise ConfigError(f"invsaga.endpoints.{name}: unknown service ({src})")
        endpoints[name] = str(address)
    for name in SERVICES:
        if f"INVSAGA_{name.upper()}_ADDR" in env:
            endpoints[name] = env[f"INVSAGA_{name.upper()}_ADDR"]

    if port is None:
        port = parse_port(env.get("INVSAGA_PORT", DEFAULT_PORTS[service]), name="INVSAGA_PORT")
    port = parse_port(port, name="--port")
    metrics_port = parse_port(env.get("INVSAGA_METRICS_PORT", port + METRICS_PORT_OFFSET), name="INVSAGA_METRICS_PORT")
    data_dir = env.get("INVSAGA_DATA_DIR") or str(mesh.get("data_dir", "./data"))
    # Empty: the embedded server of the data directory (invsaga.runtime.embedded).
    database_url = database_url or env.get("INVSAGA_DATABASE_URL") or ""
    if database_url and not database_url.startswith("postgresql"):
        raise ConfigError(
            f"INVSAGA_DATABASE_URL: expected postgresql+psycopg://..., got a {database_url.split(':', 1)[0]!r} URL"
        )
    log_format = env.get("INVSAGA_LOG_FORMAT", "json")
    if log_format not in ("json", "text"):
        raise ConfigError(f"INVSAGA_LOG_FORMAT: expected json or text, got {log_format!r}")
    log_level = str(env.get("INVSAGA_LOG_LEVEL") or mesh.get("log_level", "INFO")).upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"INVSAGA_LOG_LEVEL: unknown level {log_level!r}")
    webhooks_raw = env.get("INVSAGA_WEBHOOKS")
    webhooks = (
        tuple(u.strip() for u in webhooks_raw.split(",") if u.strip())
        if webhooks_raw is not None
        else tuple(str(u) for u in (notify.get("webhooks") or ()))
    )
    for url in webhooks:
        if not url.startswith(("http://", "https://")):
            # Only its scheme: a webhook URL may carry credentials, and this message is logged.
            raise ConfigError(f"INVSAGA_WEBHOOKS: not an http(s) URL (scheme {url.split(':', 1)[0][:16]!r})")

    faults = env.get("INVSAGA_FAULTS", "")
    if faults:
        from invsaga.runtime.faults import parse_faults

        parse_faults(faults)  # fail fast on a malformed spec

    security = security_settings(service, _section(mesh, "tls"), _section(mesh, "auth"), env, src)

    return Settings(
        service=service,
        port=port,
        host=env.get("INVSAGA_HOST", "0.0.0.0"),
        database_url=database_url,
        metrics_port=metrics_port,
        log_level=log_level,
        log_format=log_format,
        data_dir=data_dir,
        endpoints=endpoints,
        saga=saga,
        webhooks=webhooks,
        webhook_secret=env.get("INVSAGA_WEBHOOK_SECRET", str(notify.get("webhook_secret") or "")),
        fault_injection=faults,
        **_tabled(service, mesh, env),
        **security,
    )


# Settings read from INVSAGA_<SETTING>, else from the YAML ``invsaga`` block's ``key`` (in its
# sub-block ``block``, if named), else their defaults (docs/deploy.md, "Connection budget").
_TABLED: tuple[tuple[str, str, str, Callable[..., Any]], ...] = (
    ("max_connection_age", "", "max_connection_age", parse_duration),
    ("grace_period", "", "grace_period", parse_duration),
    ("max_concurrent_sagas", "coordinator", "max_concurrent_sagas", parse_positive_int),
    ("lease", "coordinator", "lease", parse_duration),
    ("recovery_interval", "coordinator", "recovery_interval", parse_duration),
    # The request bounds (invsaga.runtime.inputs).
    ("max_start_saga_bytes", "limits", "start_saga_bytes", parse_bytes),
    ("max_request_bytes", "limits", "request_bytes", parse_bytes),
    ("max_step_request_bytes", "limits", "step_request_bytes", parse_bytes),
    ("max_inflight_request_bytes", "limits", "inflight_request_bytes", parse_bytes),
    ("max_metadata_bytes", "limits", "metadata_bytes", parse_bytes),
    ("max_metadata_depth", "limits", "metadata_depth", parse_positive_int),
    # Pool sizes (invsaga.runtime.db) and the event journal (coordinator.hub).
    ("db_pool_size", "database", "pool_size", parse_positive_int),
    ("db_idle_timeout", "database", "idle_timeout", parse_duration),
    ("journal_sagas", "coordinator", "journal_sagas", parse_positive_int),
    ("journal_bytes", "coordinator", "journal_bytes", parse_bytes),
    ("journal_linger", "coordinator", "journal_linger", parse_duration),
    ("max_saga_bytes", "coordinator", "max_saga_bytes", parse_bytes),
    ("step_transport", "coordinator", "step_transport", functools.partial(parse_choice, choices=("stream", "unary"))),
    ("reservation_sweep_interval", "coordinator", "reservation_sweep_interval", parse_duration),
    ("reservation_max_extension", "coordinator", "reservation_max_extension", parse_duration),
)


def _tabled(service: str, mesh: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The settings of ``_TABLED``, in its order; the coordinator's pool defaults to 10 connections."""
    base = Settings(service=service, port=1)
    values: dict[str, Any] = {}
    for setting, block, key, parse in _TABLED:
        env_name = f"INVSAGA_{setting.upper()}"
        default = 10 if setting == "db_pool_size" and service == "coordinator" else getattr(base, setting)
        source = _section(mesh, block) if block else mesh
        values[setting] = parse(env.get(env_name, source.get(key, default)), name=env_name)
    return values


__all__ = [
    "METRICS_PORT_OFFSET",
    "PARTICIPANTS",
    "parse_bytes",
    "ConfigError",
    "CompensationConfig",
    "DEFAULT_PORTS",
    "ENV_VARS",
    "ExpiryConfig",
    "RetryConfig",
    "SERVICES",
    "SagaConfig",
    "Settings",
    "load_settings",
    "parse_duration",
]
