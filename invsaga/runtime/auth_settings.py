"""Security settings: TLS files, the authentication mode, its tokens and certificate roles,
checked at start (docs/security.md). ``load_settings`` merges what ``security_settings`` returns."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from invsaga.runtime.settings_base import PARTICIPANTS, ConfigError, parse_port

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# What a token or certificate may be: docs/security.md has the access table of each role.
AUTH_ROLES: tuple[str, ...] = ("admin", "client", "coordinator", "service")
AUTH_MODES: tuple[str, ...] = ("off", "token", "mtls")
# A tenant fits the coordinator's sagas.tenant column (String(64)) and reads well in logs.
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _grant(entry: str, *, setting: str, certificate: bool) -> tuple[str, str, str]:
    """``key:role[:name]`` checked: a token's key is its SHA-256 hex digest, a certificate's its name.

    The name is a client's tenant or, for a token of the ``service`` role, the participant
    that presents it (its identity in the access table). Messages never echo a token hash whole.
    """
    key, _, rest = entry.partition(":")
    role, _, name = rest.partition(":")
    key, role, name = key.strip(), role.strip(), name.strip()
    shown = repr(key) if certificate else f"{key[:8]!r}..."
    if certificate:
        if not key or len(key) > 256:
            raise ConfigError(f"{setting}: expected name:role[:tenant], got {entry[:80]!r}")
    else:
        key = key.lower()
        if not _SHA256_HEX.match(key):
            raise ConfigError(f"{setting}: {shown} is not a SHA-256 hex digest (expected sha256hex:role[:name])")
    if role not in AUTH_ROLES:
        raise ConfigError(f"{setting}: {shown}: role must be one of {', '.join(AUTH_ROLES)}, got {role!r}")
    if name and role == "client" and not _TENANT.match(name):
        raise ConfigError(f"{setting}: {shown}: a tenant is 1-64 letters, digits, '.', '_' or '-', got {name[:80]!r}")
    if name and role == "service" and not certificate and name not in PARTICIPANTS:
        raise ConfigError(f"{setting}: {shown}: a service token names its process, one of {', '.join(PARTICIPANTS)}")
    if name and role in ("admin", "coordinator") or (name and certificate and role == "service"):
        raise ConfigError(f"{setting}: {shown}: only a client (its tenant) or a service token (its process) has a name")
    return key, role, name


def security_settings(
    service: str, tls: Mapping[str, Any], auth: Mapping[str, Any], env: Mapping[str, str], src: str
) -> dict[str, Any]:
    """TLS files, the authentication mode, its tokens and certificate roles, checked at start.

    ``INVSAGA_AUTH`` unset: ``mtls`` if client certificates are required, else ``token`` if
    tokens are configured, else nothing is configured and the process refuses every RPC but
    health and reflection. ``INVSAGA_REQUIRE_AUTH`` makes ``off`` and that last case an error.
    """

    def pick(env_name: str, yaml_value: Any) -> tuple[str, str]:
        if env_name in env:
            return env[env_name].strip(), env_name
        return ("" if yaml_value is None else str(yaml_value).strip()), src

    def names(env_name: str, yaml_value: Any) -> tuple[str, ...]:
        value = env.get(env_name, yaml_value)  # a list in the YAML file, comma-separated text in either
        if isinstance(value, str):
            return tuple(n.strip() for n in value.split(",") if n.strip())
        return tuple(str(n).strip() for n in (value or ()))

    files = {}
    for key in ("cert", "key", "ca"):
        path, where = pick(f"INVSAGA_TLS_{key.upper()}", tls.get(key))
        if path and not Path(path).is_file():
            raise ConfigError(f"INVSAGA_TLS_{key.upper()} ({where}): no such file {path!r}")
        files[key] = path
    if bool(files["cert"]) != bool(files["key"]):
        raise ConfigError("INVSAGA_TLS_CERT and INVSAGA_TLS_KEY go together")
    if files["ca"] and not files["cert"]:
        raise ConfigError(
            "INVSAGA_TLS_CA needs INVSAGA_TLS_CERT and INVSAGA_TLS_KEY (the mesh is TLS both ways or not at all)"
        )
    client_auth, where = pick("INVSAGA_TLS_CLIENT_AUTH", tls.get("client_auth"))
    if client_auth not in ("", "none", "require"):
        raise ConfigError(f"INVSAGA_TLS_CLIENT_AUTH ({where}): expected require or none, got {client_auth!r}")

    tokens: dict[str, tuple[str, str, str]] = {}
    for setting, entries in (
        ("INVSAGA_AUTH_TOKENS", names("INVSAGA_AUTH_TOKENS", auth.get("tokens"))),
        # The older setting: bare digests, accepted as client tokens without a tenant.
        (
            "INVSAGA_AUTH_TOKEN_HASHES",
            tuple(f"{h}:client" for h in names("INVSAGA_AUTH_TOKEN_HASHES", auth.get("token_hashes"))),
        ),
    ):
        for entry in entries:
            grant = _grant(entry, setting=setting, certificate=False)
            if tokens.get(grant[0], grant) != grant:
                raise ConfigError(f"{setting}: token {grant[0][:8]!r}... is listed twice with different roles")
            tokens[grant[0]] = grant
    roles: dict[str, tuple[str, str, str]] = {}
    for entry in names("INVSAGA_TLS_ROLES", tls.get("roles")):
        grant = _grant(entry, setting="INVSAGA_TLS_ROLES", certificate=True)
        roles[grant[0]] = grant

    mode, where = pick("INVSAGA_AUTH", auth.get("mode"))
    mode = mode.lower()
    if mode == "none":  # what earlier versions called it
        mode = "off"
    if not mode:
        mode = "mtls" if client_auth == "require" else "token" if tokens else ""
    if mode and mode not in AUTH_MODES:
        raise ConfigError(f"INVSAGA_AUTH ({where}): expected token, mtls or off, got {mode!r}")
    if mode == "mtls":
        if client_auth == "none":
            raise ConfigError("INVSAGA_AUTH=mtls needs client certificates: INVSAGA_TLS_CLIENT_AUTH=require (or unset)")
        if not files["ca"]:
            raise ConfigError("INVSAGA_AUTH=mtls needs INVSAGA_TLS_CERT, INVSAGA_TLS_KEY and INVSAGA_TLS_CA")
        client_auth = "require"
    if client_auth == "require" and not files["ca"]:
        raise ConfigError("INVSAGA_TLS_CLIENT_AUTH=require needs INVSAGA_TLS_CA to verify client certificates")
    if mode == "token" and not tokens:
        raise ConfigError("INVSAGA_AUTH=token needs INVSAGA_AUTH_TOKENS (sha256hex:role[:name], ...)")
    # Not from the YAML file: a secret belongs in the environment (a Kubernetes Secret).
    service_token = env.get("INVSAGA_SERVICE_TOKEN", "").strip()
    if mode == "token" and service == "coordinator" and not service_token:
        raise ConfigError(
            "INVSAGA_AUTH=token: the coordinator needs INVSAGA_SERVICE_TOKEN, the token of role coordinator"
            " it presents on its step calls"
        )
    require, where = pick("INVSAGA_REQUIRE_AUTH", auth.get("require"))
    if require.lower() not in _TRUE + _FALSE:
        raise ConfigError(f"INVSAGA_REQUIRE_AUTH ({where}): expected true or false, got {require!r}")
    require_auth = require.lower() in _TRUE
    if require_auth and mode not in ("token", "mtls"):
        raise ConfigError(f"INVSAGA_REQUIRE_AUTH is set: INVSAGA_AUTH must be token or mtls, not {mode or 'unset'!r}")
    health_port = env.get("INVSAGA_HEALTH_PORT") or tls.get("health_port")
    return {
        "tls_cert": files["cert"],
        "tls_key": files["key"],
        "tls_ca": files["ca"],
        "tls_client_auth": client_auth == "require",
        "auth_mode": mode,
        "auth_tokens": tuple(tokens.values()),
        "tls_roles": tuple(roles.values()),
        "service_token": service_token,
        "require_auth": require_auth,
        "health_port": parse_port(health_port, name="INVSAGA_HEALTH_PORT") if health_port else 0,
    }
