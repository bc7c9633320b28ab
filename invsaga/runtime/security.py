"""Who may call what: TLS, mutual TLS, bearer tokens, and the enforcement of the access table
(``ACCESS``, in invsaga/runtime/access.py).

Deny by default, on every process (docs/security.md has the table and how to configure it):

- ``INVSAGA_AUTH=token``: every RPC needs ``authorization: Bearer <token>`` whose SHA-256 is
  listed in ``INVSAGA_AUTH_TOKENS`` as ``sha256hex:role[:name]``; the token's role (and a
  client's tenant) is the caller's. A process presents ``INVSAGA_SERVICE_TOKEN`` on its own
  calls to the others (``client_interceptors``), so the participants know the coordinator.
- ``INVSAGA_AUTH=mtls``: the server refuses a handshake without a certificate of the CA; the
  certificate's name (subject CN, else a SAN) gives the role: ``coordinator`` is the
  coordinator, the five participants' names are services, ``INVSAGA_TLS_ROLES`` adds or
  overrides names (``ops:admin``), and any other certificate is a plain client, never an
  admin. A bearer token on top, if any, is checked and then is the caller.
- ``INVSAGA_AUTH=off`` (development meshes): no checks, every caller is an admin; the
  process says so at start and every minute, and its health service answers NOT_SERVING
  for ``invsaga.auth``.
- Nothing configured: every RPC but health and reflection is UNAUTHENTICATED.

``ACCESS`` is the table, ``AccessInterceptor`` the one place it is enforced. A refused call is
UNAUTHENTICATED (no or invalid credentials) or PERMISSION_DENIED (a known caller, not
allowed), answered before the servicer reads the request. An admitted call runs with its
``Caller`` in ``CURRENT_CALLER`` (``caller()``), including every request of an
ExecuteStream message, which is served in the call's own context.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import inspect
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

import grpc
from grpc_health.v1 import health_pb2

from invsaga.runtime.access import ACCESS, CURRENT_CALLER, Caller, Rule, caller, is_public, rule_for
from invsaga.runtime.config import PARTICIPANTS, Settings
from invsaga.runtime.errors import PermissionDenied, Unauthenticated
from invsaga.runtime.interceptors import CachingInterceptor, Refusal, codec

log = logging.getLogger("invsaga.security")

# The health service entry that tells whether this process checks its callers.
AUTH_HEALTH_NAME = "invsaga.auth"
AUTH_MODE_HEADER = "invsaga-auth-mode"
REMINDER_SECONDS = 60.0
_MAX_TOKEN_CHARS = 4096


# -- tokens and certificates ------------------------------------------------------------------
def hash_token(token: str) -> str:
    """What the configuration stores for ``token``: its SHA-256 in hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, hashes: Iterable[str]) -> bool:
    """Constant-time comparison against every stored hash (no early exit on a match)."""
    digest = hash_token(token)
    found = False
    for stored in hashes:
        found |= hmac.compare_digest(digest, stored)
    return found


# Certificate names and their roles under mTLS unless INVSAGA_TLS_ROLES says otherwise;
# any other certificate of the CA is a client without a tenant.
DEFAULT_TLS_ROLES: dict[str, tuple[str, str]] = {
    "coordinator": ("coordinator", ""),
    **{name: ("service", "") for name in PARTICIPANTS},
}


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for the server port, or None for plaintext."""
    if not settings.tls_cert:
        return None
    pair = [(_read(settings.tls_key), _read(settings.tls_cert))]
    if settings.tls_client_auth:
        return grpc.ssl_server_credentials(pair, root_certificates=_read(settings.tls_ca), require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


@functools.lru_cache(maxsize=8)
def _channel_credentials(ca: str, cert: str, key: str) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca) if ca else None,
        private_key=_read(key) if key else None,
        certificate_chain=_read(cert) if cert else None,
    )


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """Credentials of this process's channels to the others, or None for plaintext."""
    if not settings.tls_cert:
        return None
    return _channel_credentials(settings.tls_ca, settings.tls_cert, settings.tls_key)


def peer_names(context: Any) -> list[str]:
    """The names the peer's client certificate goes by: its subject CN; without one (as
    SPIFFE-style certificates), its subject alternative names. Never both: a SAN shared by
    many certificates (a wildcard, ``localhost``) must not lend them a role."""
    auth = context.auth_context()
    names = auth.get("x509_common_name") or auth.get("x509_subject_alternative_name") or ()
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def _unauthenticated(message: str) -> Refusal:
    return Refusal(Unauthenticated(message, reason="UNAUTHENTICATED").to_status())


_NOT_CONFIGURED = (
    "this process serves only health and reflection: authentication is not configured " "(INVSAGA_AUTH=token or mtls)"
)
_NEEDS_TOKEN = "a valid 'authorization: Bearer <token>' is required"
_BAD_TOKEN = "the bearer token is not valid"


def _bearer(metadata: Iterable[Any] | None) -> str | None:
    """The token of the first ``authorization`` header; '' if that header is not a bearer token."""
    for item in metadata or ():
        if item[0] == "authorization":
            value = item[1] if isinstance(item[1], str) else ""
            scheme, _, token = value.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or len(token) > _MAX_TOKEN_CHARS:
                return ""
            return token
    return None


class Gate:
    """Authentication (who is calling) and authorization (``ACCESS``) of one process."""

    def __init__(self, settings: Settings) -> None:
        self.mode = settings.auth_mode
        # (digest, caller): a token's identity is its name, else a prefix of its digest.
        self.tokens: tuple[tuple[str, Caller], ...] = tuple(
            (digest, _token_caller(digest, role, name)) for digest, role, name in settings.auth_tokens
        )
        roles = {name: (role, "") for name, (role, _) in DEFAULT_TLS_ROLES.items()}
        roles.update({name: (role, tenant) for name, role, tenant in settings.tls_roles})
        self.cert_roles: Mapping[str, tuple[str, str]] = roles

    @property
    def enforcing(self) -> bool:
        return self.mode != "off"

    def by_token(self, token: str) -> Caller | None:
        digest = hash_token(token)
        found = None
        for stored, who in self.tokens:  # no early exit: the time does not depend on which matched
            if hmac.compare_digest(digest, stored):
                found = who
        return found

    def by_certificate(self, context: Any) -> Caller | None:
        names = peer_names(context)
        if not names:
            return None
        for name in names:
            if name in self.cert_roles:
                role, tenant = self.cert_roles[name]
                return Caller(identity=name, role=role, tenant=tenant)
        return Caller(identity=names[0], role="client")

    def authenticate(self, context: Any) -> Caller:
        """The caller of this call, or ``Refusal`` (UNAUTHENTICATED)."""
        if not self.mode:
            raise _unauthenticated(_NOT_CONFIGURED)
        token = _bearer(context.invocation_metadata())
        if token is not None:
            who = self.by_token(token) if token else None
            if who is None:
                raise _unauthenticated(_BAD_TOKEN)
            return who
        if self.mode == "mtls":
            who = self.by_certificate(context)
            if who is not None:
                return who
        raise _unauthenticated(_NEEDS_TOKEN)

    def admit(self, method: str, rule: Rule, context: Any) -> Caller:
        """The caller, if ``rule`` lets it call ``method``; else ``Refusal``."""
        who = self.authenticate(context)
        if not rule.allows(who):
            name = method.rsplit(".", 1)[-1]  # "Service/Method", without the package
            log.warning("refused %s to %s (role %s)", name, who.identity, who.role)
            raise Refusal(
                PermissionDenied(
                    f"{name} is not allowed to {who.identity!r} (role {who.role})",
                    reason="PERMISSION_DENIED",
                    metadata={"role": who.role},
                ).to_status()
            )
        return who


def _token_caller(digest: str, role: str, name: str) -> Caller:
    tenant = name if role == "client" else ""
    if role == "service" and name:
        return Caller(identity=name, role=role, tenant=tenant)
    if role == "client" and name:
        return Caller(identity=f"client-{name}", role=role, tenant=tenant)
    return Caller(identity=f"{role}-{digest[:8]}", role=role, tenant=tenant)


# -- the server side --------------------------------------------------------------------------
class AccessInterceptor(CachingInterceptor):
    """The one place the access table is enforced, and ``CURRENT_CALLER`` set.

    Each method's handler is wrapped once. The wrapper decides before the servicer (and the
    request checks beneath it) runs; a refused call never reaches them.
    """

    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method.startswith("/grpc.health.v1.Health/"):
            return _health_marker(method, handler, self.gate.mode)
        if is_public(method) or not self.gate.enforcing:
            return handler
        return _guarded(method, handler, self.gate, rule_for(method))


def _guarded(method: str, handler: grpc.RpcMethodHandler, gate: Gate, rule: Rule) -> grpc.RpcMethodHandler:
    """``handler`` behind ``gate``: the caller is admitted, then served with it as CURRENT_CALLER."""

    async def admit(context) -> Caller:
        try:
            return gate.admit(method, rule, context)
        except Refusal as refused:
            await context.abort_with_status(refused.status)
            raise  # pragma: no cover - abort raises

    kwargs = codec(handler)
    if handler.unary_unary or handler.stream_unary:
        unary = handler.unary_unary or handler.stream_unary

        async def guarded_unary(request_or_iterator, context):
            reset = CURRENT_CALLER.set(await admit(context))
            try:
                return await unary(request_or_iterator, context)
            finally:
                CURRENT_CALLER.reset(reset)

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(guarded_unary, **kwargs)
        return grpc.stream_unary_rpc_method_handler(guarded_unary, **kwargs)
    # Streaming answers: the RPC runs in a task of its own, so the caller set here lasts
    # exactly as long as the call (and the tasks a stream starts inherit it).
    streaming = handler.unary_stream or handler.stream_stream
    if inspect.isasyncgenfunction(streaming):

        async def guarded_stream(request, context):
            CURRENT_CALLER.set(await admit(context))
            async for item in streaming(request, context):
                yield item

    else:  # a handler that writes its answers with context.write

        async def guarded_stream(request, context):
            CURRENT_CALLER.set(await admit(context))
            return await streaming(request, context)

    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(guarded_stream, **kwargs)
    return grpc.stream_stream_rpc_method_handler(guarded_stream, **kwargs)


def _health_marker(method: str, handler: grpc.RpcMethodHandler, mode: str) -> grpc.RpcMethodHandler:
    """Health answers for ``invsaga.auth``: SERVING when callers are checked (token, mtls),
    NOT_SERVING when authentication is off or not configured; the mode in a trailer."""
    answer = health_pb2.HealthCheckResponse(status="SERVING" if mode in ("token", "mtls") else "NOT_SERVING")
    trailer = ((AUTH_MODE_HEADER, mode or "unconfigured"),)
    kwargs = codec(handler)
    if method.endswith("/Check") and handler.unary_unary:
        check = handler.unary_unary

        async def marked_check(request, context):
            if request.service == AUTH_HEALTH_NAME:
                context.set_trailing_metadata(trailer)
                return answer
            return await check(request, context)

        return grpc.unary_unary_rpc_method_handler(marked_check, **kwargs)
    if method.endswith("/Watch") and handler.unary_stream:
        watch = handler.unary_stream

        async def marked_watch(request, context):
            if request.service != AUTH_HEALTH_NAME:
                return await watch(request, context)
            await context.write(answer)
            await asyncio.Event().wait()  # the mode never changes; the watcher hangs up
            return None

        return grpc.unary_stream_rpc_method_handler(marked_watch, **kwargs)
    return handler


def _remind(loop: asyncio.AbstractEventLoop, message: str) -> None:
    log.warning(message)
    loop.call_later(REMINDER_SECONDS, _remind, loop, message)


_OFF = (
    "authentication is OFF (INVSAGA_AUTH=off): every caller is an admin and may call every RPC "
    "of this process; for development meshes only"
)
_UNCONFIGURED = (
    "authentication is not configured: every RPC but health and reflection is refused "
    "(set INVSAGA_AUTH=token or mtls; off for a development mesh)"
)


def announce(settings: Settings) -> None:
    """Say at start how this process checks its callers; off or unconfigured, every minute."""
    mode = settings.auth_mode
    if mode in ("token", "mtls"):
        roles = sorted({role for _, role, _ in settings.auth_tokens})
        log.info(
            "authentication: %s; %d token(s) of role(s) %s", mode, len(settings.auth_tokens), ", ".join(roles) or "-"
        )
        # Of the participants only logistics calls another (inventory, for a picklist's locks).
        if mode == "token" and not settings.service_token and settings.service == "logistics":
            log.warning(
                "INVSAGA_SERVICE_TOKEN is not set: this process's calls to the other participants will be refused"
            )
        return
    message = _OFF if mode == "off" else _UNCONFIGURED
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        log.warning(message)
        return
    _remind(loop, message)


def server_interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """The access interceptor of this process (it also answers health for ``invsaga.auth``)."""
    announce(settings)
    return [AccessInterceptor(Gate(settings))]


# -- the client side --------------------------------------------------------------------------
class _Bearer:
    """Adds this process's service token to each call; never shows it (repr, logs)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<service token>)"

    def _details(self, details):
        return details._replace(metadata=grpc.aio.Metadata(*(details.metadata or ()), self._header))


# grpc.aio files a client interceptor under one kind only: one class per kind.
class _UnaryUnaryBearer(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


class _UnaryStreamBearer(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


class _StreamUnaryBearer(_Bearer, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStreamBearer(_Bearer, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(self._details(client_call_details), request_iterator)


def bearer_interceptors(token: str) -> list[Any]:
    """Client interceptors that send ``authorization: Bearer <token>`` on every call."""
    return [cls(token) for cls in (_UnaryUnaryBearer, _UnaryStreamBearer, _StreamUnaryBearer, _StreamStreamBearer)]


def client_interceptors(settings: Settings) -> list[Any]:
    """What this process's channels to the others add: its service token, unless mTLS
    identifies it (a token would then stand for it instead of its certificate)."""
    if not settings.service_token or settings.auth_mode == "mtls":
        return []
    return bearer_interceptors(settings.service_token)


__all__ = [
    "ACCESS",
    "AUTH_HEALTH_NAME",
    "AccessInterceptor",
    "CURRENT_CALLER",
    "Caller",
    "Gate",
    "Rule",
    "bearer_interceptors",
    "caller",
    "channel_credentials",
    "client_interceptors",
    "hash_token",
    "peer_names",
    "rule_for",
    "server_credentials",
    "server_interceptors",
    "token_matches",
]
